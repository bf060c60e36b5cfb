#!/usr/bin/env python3
"""Checks the Strata chart's own invariants in rendered manifests (`helm template` output).

Usage: check_invariants.py RENDERED.yaml [--expect-server] [--expect-snapshots]
                           [--expect-snapshot-class] [--expect-datavolume-classes]

What kubernetes-validate cannot know: that the pieces of the CSI driver fit together. The node
plugin is privileged, mounts the kubelet directory with Bidirectional propagation, /dev/fuse and
its state directory; the socket the node-driver-registrar registers with the kubelet is the
driver's endpoint as seen from the host; every sidecar talks to the driver's socket; the
CSIDriver's name is every StorageClass's provisioner; the StorageClasses' secrets are the PVC's
namespace's own; the VolumeSnapshotClass (a CRD kind kubernetes-validate has no schema for: its
fields are checked here) is the driver's and takes the VolumeSnapshot's namespace's token; every
image is pinned. Prints one line per failed check and exits 1 if any.
"""
import os
import sys

import yaml

DRIVER = "csi.strata.io"
SECRET_KINDS = ("provisioner", "controller-expand", "node-stage")

errors = []


def check(cond, msg):
    if not cond:
        errors.append(msg)
    return cond


def args_of(container):
    """The container's flags as a dict (--flag=value or --flag value), plus positional words."""
    words = list(container.get("command", []) or []) + list(container.get("args", []) or [])
    flags, pos, i = {}, [], 0
    while i < len(words):
        w = str(words[i])
        if w.startswith("--"):
            if "=" in w:
                k, v = w.split("=", 1)
            elif i + 1 < len(words) and not str(words[i + 1]).startswith("--"):
                k, v = w, str(words[i + 1])
                i += 1
            else:
                k, v = w, True
            flags[k] = v
        else:
            pos.append(w)
        i += 1
    return flags, pos


def unix_path(endpoint):
    return endpoint[len("unix://"):] if endpoint.startswith("unix://") else endpoint


def resolve(pod, container, path):
    """Where `path` inside `container` lives: ("host", host path) through a hostPath volume, or
    ("volume", name, path inside it) for any other volume; None if no mount holds it."""
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    best = None
    for m in container.get("volumeMounts", []):
        mp = m["mountPath"].rstrip("/") or "/"
        if path == mp or path.startswith(mp + "/"):
            if best is None or len(mp) > len(best[0]):
                best = (mp, m)
    if best is None:
        return None
    mp, m = best
    rest = os.path.relpath(path, mp)
    vol = vols.get(m["name"])
    if vol is None:
        errors.append(f"{container['name']}: mount {m['name']} names no volume")
        return None
    if "hostPath" in vol:
        return ("host", os.path.normpath(os.path.join(vol["hostPath"]["path"], rest)))
    return ("volume", m["name"], os.path.normpath(rest))


def pinned(image):
    name = image.rsplit("/", 1)[-1]
    return "@sha256:" in image or (":" in name and not name.endswith(":latest"))


def pod_spec(obj):
    return obj["spec"]["template"]["spec"]


def main():
    path = sys.argv[1]
    expect_server = "--expect-server" in sys.argv
    expect_snapshots = "--expect-snapshots" in sys.argv
    expect_snapshot_class = "--expect-snapshot-class" in sys.argv
    expect_dv_classes = "--expect-datavolume-classes" in sys.argv
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)

    # ---- CSIDriver and StorageClasses ----
    drivers = by_kind.get("CSIDriver", [])
    if check(len(drivers) == 1, f"want one CSIDriver, found {len(drivers)}"):
        drv = drivers[0]
        check(drv["metadata"]["name"] == DRIVER, f"CSIDriver is named {drv['metadata']['name']}, not {DRIVER}")
        spec = drv["spec"]
        check(spec.get("attachRequired") is False, "CSIDriver: attachRequired must be false (no ControllerPublish)")
        check(spec.get("podInfoOnMount") is False, "CSIDriver: podInfoOnMount must be false")
        check(spec.get("volumeLifecycleModes") == ["Persistent"], "CSIDriver: volumeLifecycleModes must be [Persistent]")
    classes = by_kind.get("StorageClass", [])
    check(len(classes) >= 1, "no StorageClass")
    secret_names = set()
    for sc in classes:
        n = sc["metadata"]["name"]
        check(sc.get("provisioner") == DRIVER, f"StorageClass {n}: provisioner {sc.get('provisioner')} is not the CSIDriver's name {DRIVER}")
        p = sc.get("parameters", {})
        if "strata.io/datavolume" in p:
            # A data volume's claims: read-only, nothing provisioned, so nothing to expand.
            check(sc.get("allowVolumeExpansion") is False, f"StorageClass {n}: a data volume's class must not allow expansion")
            for k in ("strata.io/class", "strata.io/scope", "strata.io/inodes", "strata.io/reclaim"):
                check(k not in p, f"StorageClass {n}: {k} does not apply to a data volume (the driver refuses it)")
            v = p.get("strata.io/datavolume-version", "1")
            check(v.isdigit() and int(v) > 0, f"StorageClass {n}: strata.io/datavolume-version {v!r} is not a version number")
        else:
            check(p.get("strata.io/class"), f"StorageClass {n}: no strata.io/class")
        for kind in SECRET_KINDS:
            name = p.get(f"csi.storage.k8s.io/{kind}-secret-name")
            ns = p.get(f"csi.storage.k8s.io/{kind}-secret-namespace")
            check(name, f"StorageClass {n}: no {kind}-secret-name")
            secret_names.add(name)
            check(ns == "${pvc.namespace}", f"StorageClass {n}: {kind}-secret-namespace is {ns!r}, not ${{pvc.namespace}} (a PVC would use another namespace's token)")
        if "strata.io/scope" in p and "${" in p["strata.io/scope"]:
            check("${" not in p["strata.io/scope"].replace("${pvc.namespace}", ""),
                  f"StorageClass {n}: strata.io/scope {p['strata.io/scope']!r} uses a template other than ${{pvc.namespace}}")
        check(p.get("strata.io/reclaim", "delete") in ("delete", "retain"), f"StorageClass {n}: strata.io/reclaim is not delete or retain")
    check(len(secret_names) <= 1, f"StorageClasses name several token Secrets: {sorted(secret_names)}")
    dv_classes = [sc for sc in classes if "strata.io/datavolume" in sc.get("parameters", {})]
    check(bool(dv_classes) == expect_dv_classes, f"data-volume StorageClasses {'missing' if expect_dv_classes else 'present'}")

    # ---- VolumeSnapshotClass (a CRD kind: no schema in kubernetes-validate) ----
    vscs = by_kind.get("VolumeSnapshotClass", [])
    check(bool(vscs) == expect_snapshot_class, f"VolumeSnapshotClass {'missing' if expect_snapshot_class else 'present'}")
    for c in vscs:
        n = c["metadata"].get("name")
        known = {"apiVersion", "kind", "metadata", "driver", "deletionPolicy", "parameters"}
        check(set(c) <= known, f"VolumeSnapshotClass {n}: unknown fields {sorted(set(c) - known)}")
        check(c.get("apiVersion") == "snapshot.storage.k8s.io/v1", f"VolumeSnapshotClass {n}: apiVersion {c.get('apiVersion')} is not snapshot.storage.k8s.io/v1")
        check(c.get("driver") == DRIVER, f"VolumeSnapshotClass {n}: driver {c.get('driver')} is not {DRIVER}")
        check(c.get("deletionPolicy") in ("Delete", "Retain"), f"VolumeSnapshotClass {n}: deletionPolicy {c.get('deletionPolicy')!r} is not Delete or Retain")
        p = c.get("parameters", {})
        check(all(isinstance(v, str) for v in p.values()), f"VolumeSnapshotClass {n}: parameters must be strings")
        name = p.get("csi.storage.k8s.io/snapshotter-secret-name")
        check(name is not None and (not secret_names or name in secret_names), f"VolumeSnapshotClass {n}: snapshotter-secret-name {name!r} is not the StorageClasses' token Secret")
        ns = p.get("csi.storage.k8s.io/snapshotter-secret-namespace")
        check(ns == "${volumesnapshot.namespace}", f"VolumeSnapshotClass {n}: snapshotter-secret-namespace is {ns!r}, not ${{volumesnapshot.namespace}} (a snapshot would use another namespace's token)")
    check(not vscs or expect_snapshots, "a VolumeSnapshotClass without the csi-snapshotter sidecar")
    defaults = [sc for sc in classes if sc["metadata"].get("annotations", {}).get("storageclass.kubernetes.io/is-default-class") == "true"]
    check(len(defaults) <= 1, "more than one default StorageClass")

    # ---- every image pinned ----
    for kind in ("Deployment", "DaemonSet", "StatefulSet"):
        for obj in by_kind.get(kind, []):
            for c in pod_spec(obj).get("containers", []) + pod_spec(obj).get("initContainers", []):
                check(pinned(c["image"]), f"{kind} {obj['metadata']['name']}: container {c['name']} image {c['image']} is not pinned to a tag (or is :latest)")

    def driver_container(pod, mode):
        for c in pod.get("containers", []):
            flags, pos = args_of(c)
            if "csi" in pos and flags.get("--mode") == mode:
                return c, flags
        return None, None

    servers = set()

    # ---- node plugin ----
    ds = by_kind.get("DaemonSet", [])
    if check(len(ds) == 1, f"want one DaemonSet (the node plugin), found {len(ds)}"):
        ds = ds[0]
        pod = pod_spec(ds)
        name = ds["metadata"]["name"]
        check(pod.get("priorityClassName") == "system-node-critical", f"DaemonSet {name}: priorityClassName is not system-node-critical")
        check(ds["spec"].get("updateStrategy", {}).get("type") == "OnDelete",
              f"DaemonSet {name}: updateStrategy is not OnDelete (a rolling update kills the FUSE workers, ending every mount on the node)")
        plugin, flags = driver_container(pod, "node")
        if check(plugin is not None, f"DaemonSet {name}: no `strata csi --mode=node` container"):
            sc = plugin.get("securityContext", {})
            check(sc.get("privileged") is True, "node plugin: not privileged")
            mounts = {m["mountPath"]: m for m in plugin.get("volumeMounts", [])}
            vols = {v["name"]: v for v in pod.get("volumes", [])}
            fuse = mounts.get("/dev/fuse")
            if check(fuse is not None, "node plugin: /dev/fuse is not mounted"):
                hp = vols.get(fuse["name"], {}).get("hostPath", {})
                check(hp.get("path") == "/dev/fuse", "node plugin: /dev/fuse is not the host's /dev/fuse")
            servers.add(flags.get("--server"))
            check(flags.get("--node-id") == "$(CSI_NODE_ID)", "node plugin: --node-id is not $(CSI_NODE_ID)")
            env = {e["name"]: e for e in plugin.get("env", [])}
            check(env.get("CSI_NODE_ID", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "spec.nodeName",
                  "node plugin: CSI_NODE_ID is not the node's name")
            state = flags.get("--state-dir", "/var/lib/strata-csi")
            check(resolve(pod, plugin, state) == ("host", state),
                  f"node plugin: its state dir {state} is not the host's {state} (a restarted plugin would not find its mounts)")
            endpoint = flags.get("--endpoint", "")
            check(endpoint.startswith("unix://"), f"node plugin: --endpoint {endpoint!r} is not a unix socket")
            sock = resolve(pod, plugin, unix_path(endpoint))
            want_dir = None
            regs = [c for c in pod["containers"] if "--kubelet-registration-path" in args_of(c)[0]]
            if check(len(regs) == 1, "node DaemonSet: want one node-driver-registrar"):
                reg = regs[0]
                rflags, _ = args_of(reg)
                reg_path = rflags["--kubelet-registration-path"]
                check(sock == ("host", reg_path),
                      f"node: the registrar registers {reg_path}, but the driver listens on {endpoint} = {sock} on the host")
                check(resolve(pod, reg, rflags.get("--csi-address", "")) == ("host", reg_path),
                      "node: the registrar's --csi-address is not the driver's socket")
                want_dir = os.path.dirname(reg_path)
                check(os.path.basename(want_dir) == DRIVER and os.path.basename(os.path.dirname(want_dir)) == "plugins",
                      f"node: the socket's directory {want_dir} is not KUBELET/plugins/{DRIVER}")
                kubelet = os.path.dirname(os.path.dirname(want_dir))
                check(resolve(pod, reg, "/registration") == ("host", f"{kubelet}/plugins_registry"),
                      f"node: the registrar's /registration is not {kubelet}/plugins_registry")
                km = mounts.get(kubelet)
                if check(km is not None, f"node plugin: the kubelet directory {kubelet} is not mounted"):
                    check(km.get("mountPropagation") == "Bidirectional", f"node plugin: {kubelet} is mounted without Bidirectional propagation")
                    check(resolve(pod, plugin, kubelet) == ("host", kubelet), f"node plugin: {kubelet} is not the host's {kubelet}")
            probes = [c for c in pod["containers"] if "--health-port" in args_of(c)[0]]
            if check(len(probes) == 1, "node DaemonSet: want one livenessprobe sidecar"):
                lflags, _ = args_of(probes[0])
                check(resolve(pod, probes[0], lflags.get("--csi-address", "")) == sock, "node: livenessprobe's --csi-address is not the driver's socket")
                ports = {p.get("name"): p["containerPort"] for p in plugin.get("ports", [])}
                check(str(ports.get("healthz")) == str(lflags["--health-port"]), "node: the plugin's healthz port is not livenessprobe's --health-port")
                check(plugin.get("livenessProbe", {}).get("httpGet", {}).get("port") == "healthz", "node plugin: no liveness probe on healthz")

    # ---- controller ----
    deps = [d for d in by_kind.get("Deployment", []) if driver_container(pod_spec(d), "controller")[0]]
    if check(len(deps) == 1, f"want one Deployment running `strata csi --mode=controller`, found {len(deps)}"):
        dep = deps[0]
        pod = pod_spec(dep)
        ctl, flags = driver_container(pod, "controller")
        servers.add(flags.get("--server"))
        sock = resolve(pod, ctl, unix_path(flags.get("--endpoint", "")))
        check(sock is not None, "controller: the driver's socket is on no volume the sidecars can share")
        sidecars = {}
        for c in pod["containers"]:
            if c is ctl:
                continue
            cflags, _ = args_of(c)
            check("--csi-address" in cflags, f"controller: sidecar {c['name']} has no --csi-address")
            check(resolve(pod, c, cflags.get("--csi-address", "")) == sock,
                  f"controller: sidecar {c['name']}'s --csi-address {cflags.get('--csi-address')} is not the driver's endpoint {flags.get('--endpoint')}")
            sidecars[c["image"].rsplit("/", 1)[-1].split(":")[0]] = cflags
        for want in ("csi-provisioner", "csi-resizer", "livenessprobe"):
            check(want in sidecars, f"controller: no {want} sidecar")
        check(("csi-snapshotter" in sidecars) == expect_snapshots,
              f"controller: csi-snapshotter {'missing' if expect_snapshots else 'present'} (snapshots.enabled={expect_snapshots})")
        prov = sidecars.get("csi-provisioner", {})
        check(prov.get("--extra-create-metadata") is True, "controller: csi-provisioner lacks --extra-create-metadata (strata.io/scope's ${pvc.namespace} needs it)")
        for n in ("csi-provisioner", "csi-resizer", "csi-snapshotter"):
            if n in sidecars:
                check(sidecars[n].get("--leader-election") in ("true", True), f"controller: {n} does not elect a leader")
        ports = {p.get("name"): p["containerPort"] for p in ctl.get("ports", [])}
        check(str(ports.get("healthz")) == str(sidecars.get("livenessprobe", {}).get("--health-port")),
              "controller: the driver's healthz port is not livenessprobe's --health-port")
        if "--token-file" in flags:
            where = resolve(pod, ctl, flags["--token-file"])
            vols = {v["name"]: v for v in pod.get("volumes", [])}
            vol = vols.get(where[1], {}) if where and where[0] == "volume" else {}
            check("secret" in vol and not vol["secret"].get("optional"),
                  f"controller: --token-file {flags['--token-file']} is not in a (required) Secret volume")
        sa = pod.get("serviceAccountName")
        # The controller's ServiceAccount may read Secrets (the PVCs' namespaces' tokens) and leases.
        bound = set()
        for b in by_kind.get("ClusterRoleBinding", []) + by_kind.get("RoleBinding", []):
            if any(s.get("kind") == "ServiceAccount" and s.get("name") == sa for s in b.get("subjects", [])):
                bound.add((b["roleRef"]["kind"], b["roleRef"]["name"]))
        rules = [r for kind in ("ClusterRole", "Role") for role in by_kind.get(kind, [])
                 if (kind, role["metadata"]["name"]) in bound for r in role.get("rules", [])]

        def allowed(group, resource, verb):
            return any(group in r.get("apiGroups", []) and resource in r.get("resources", []) and verb in r.get("verbs", []) for r in rules)

        for group, res, verb in [("", "secrets", "get"), ("", "persistentvolumes", "create"), ("", "persistentvolumes", "delete"),
                                 ("", "persistentvolumeclaims/status", "patch"), ("coordination.k8s.io", "leases", "update"),
                                 ("", "events", "create"), ("storage.k8s.io", "storageclasses", "get")]:
            check(allowed(group, res, verb), f"controller: ServiceAccount {sa} may not {verb} {res}")
        if expect_snapshots:
            check(allowed("snapshot.storage.k8s.io", "volumesnapshotcontents", "update"), f"controller: ServiceAccount {sa} may not update volumesnapshotcontents")

    check(len(servers) == 1 and None not in servers, f"the controller and the node plugin name different servers: {servers}")
    sts = [s for s in by_kind.get("StatefulSet", [])]
    check(bool(sts) == expect_server, f"embedded server {'missing' if expect_server else 'present'}")
    if expect_server and sts and len(servers) == 1:
        svc = [s for s in by_kind.get("Service", []) if s["metadata"]["name"] == sts[0]["spec"]["serviceName"]]
        if check(len(svc) == 1, "the server's StatefulSet has no Service"):
            s = svc[0]
            addr = f"{s['metadata']['name']}.{s['metadata']['namespace']}.svc:{s['spec']['ports'][0]['port']}"
            check(servers == {addr}, f"the driver's --server {servers} is not the embedded server's Service {addr}")

    for e in errors:
        print(f"check_invariants: {path}: {e}")
    if errors:
        sys.exit(1)
    print(f"check_invariants: {path}: {len(docs)} objects, every invariant holds")


if __name__ == "__main__":
    main()
