{{/* The CSI driver's name: fixed by the driver (CSIDriver, StorageClass provisioner, socket dir). */}}
{{- define "strata.driverName" -}}csi.strata.io{{- end -}}

{{- define "strata.name" -}}{{ .Chart.Name }}{{- end -}}

{{- define "strata.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "strata.labels" -}}
app.kubernetes.io/name: {{ include "strata.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Selector labels of one component: "strata.selector" (dict "ctx" $ "component" "node") */}}
{{- define "strata.selector" -}}
app.kubernetes.io/name: {{ include "strata.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "strata.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* HOST:PORT of the Strata server: the address given, else the embedded server's Service. */}}
{{- define "strata.serverAddress" -}}
{{- if .Values.server.address -}}
{{- .Values.server.address -}}
{{- else if .Values.server.enabled -}}
{{- printf "%s-server.%s.svc:%d" (include "strata.fullname" .) .Release.Namespace (int .Values.server.port) -}}
{{- else -}}
{{- fail "set server.address to the Strata server's HOST:PORT (e.g. --set server.address=strata.example:7420), or server.enabled=true to run one in the cluster" -}}
{{- end -}}
{{- end -}}

{{/* The CSI socket: inside every container of a pod at /csi/csi.sock. On a node, /csi is the
     host directory the kubelet finds the driver's socket in. */}}
{{- define "strata.csiEndpoint" -}}unix:///csi/csi.sock{{- end -}}
{{- define "strata.csiAddress" -}}/csi/csi.sock{{- end -}}
{{- define "strata.nodePluginDir" -}}{{ .Values.node.kubeletDir }}/plugins/{{ include "strata.driverName" . }}{{- end -}}

{{- define "strata.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Scheduling fields of a component: "strata.scheduling" .Values.node */}}
{{- define "strata.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
