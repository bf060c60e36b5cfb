//! The CSI driver as Kubernetes drives it, with this test playing the external provisioner and
//! the kubelets of two nodes (two node plugins, each with its own state directory): a volume is
//! provisioned, staged and published on both nodes, two "pods" share it, it grows online, and
//! the node plugin and its FUSE worker are killed and replaced while a pod keeps writing.
//! Then everything is taken down again: no mount, no volume and no block is left.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::csi::*;
use common::*;
use strata_csi::pb;
use strata_csi::pb::volume_capability::access_mode::Mode;

const MIB: i64 = 1 << 20;

/// The pid of the FUSE worker a node plugin runs for its (only) staged volume.
fn worker_pid(d: &CsiDriver) -> i32 {
    let dir = d.state_dir.join("staged");
    for e in std::fs::read_dir(&dir).expect("state dir") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|x| x == "json") {
            let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).expect("record")).expect("json");
            return v["pid"].as_i64().expect("pid") as i32;
        }
    }
    panic!("no staged volume in {}", dir.display());
}

fn statvfs_total(p: &Path) -> u64 {
    let c = cpath(p);
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: valid path; `st` is written by a successful call.
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) }, 0, "statvfs {}", p.display());
    // SAFETY: the call succeeded.
    let st = unsafe { st.assume_init() };
    st.f_blocks * st.f_frsize
}

/// CreateVolume as the external provisioner sends it.
fn provision(d: &CsiDriver, name: &str, bytes: i64, mode: Mode, params: &[(&str, &str)], token: &str) -> pb::Volume {
    d.block_on(d.controller().create_volume(pb::CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(pb::CapacityRange { required_bytes: bytes, limit_bytes: 0 }),
        volume_capabilities: vec![mount_cap(mode)],
        parameters: params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        secrets: secrets(token),
        ..Default::default()
    }))
    .expect("CreateVolume")
    .into_inner()
    .volume
    .expect("volume")
}

/// What a node's kubelet asks of the driver for one volume: stage it once at `staging`,
/// publish it into pods, and take both down again.
struct Kubelet<'a> {
    d: &'a CsiDriver,
    id: String,
    staging: PathBuf,
    mode: Mode,
}

impl<'a> Kubelet<'a> {
    fn new(d: &'a CsiDriver, id: &str, mode: Mode) -> Kubelet<'a> {
        Kubelet {
            d,
            id: id.to_string(),
            staging: d.dir.join("plugins/kubernetes.io/csi/csi.strata.io/globalmount"),
            mode,
        }
    }

    /// The kubelet of a second claim on the node: its own staging path, named `claim`.
    fn at(d: &'a CsiDriver, id: &str, mode: Mode, claim: &str) -> Kubelet<'a> {
        Kubelet { d, id: id.to_string(), staging: d.dir.join(format!("plugins/{claim}/globalmount")), mode }
    }

    fn stage(&self, token: &str, ctx: &HashMap<String, String>) -> Result<(), tonic::Status> {
        let d = self.d;
        d.block_on(d.node().node_stage_volume(pb::NodeStageVolumeRequest {
            volume_id: self.id.clone(),
            staging_target_path: self.staging.display().to_string(),
            volume_capability: Some(mount_cap(self.mode)),
            secrets: secrets(token),
            volume_context: ctx.clone(),
            ..Default::default()
        }))
        .map(|_| ())
    }

    /// Publishes into the pod volume directory `target`.
    fn publish(&self, target: &Path) {
        let d = self.d;
        d.block_on(d.node().node_publish_volume(pb::NodePublishVolumeRequest {
            volume_id: self.id.clone(),
            staging_target_path: self.staging.display().to_string(),
            target_path: target.display().to_string(),
            volume_capability: Some(mount_cap(self.mode)),
            ..Default::default()
        }))
        .expect("NodePublishVolume");
    }

    fn unpublish(&self, target: &Path) {
        let d = self.d;
        d.block_on(d.node().node_unpublish_volume(pb::NodeUnpublishVolumeRequest {
            volume_id: self.id.clone(),
            target_path: target.display().to_string(),
        }))
        .expect("NodeUnpublishVolume");
        assert!(!target.exists(), "target path {} left behind", target.display());
    }

    fn unstage(&self) {
        let d = self.d;
        d.block_on(d.node().node_unstage_volume(pb::NodeUnstageVolumeRequest {
            volume_id: self.id.clone(),
            staging_target_path: self.staging.display().to_string(),
        }))
        .expect("NodeUnstageVolume");
    }
}

/// A "pod" appending fixed-size records, each fsynced, until told to stop; the count written
/// and every error seen.
fn writer(path: PathBuf, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(usize, Vec<String>)> {
    std::thread::spawn(move || {
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).expect("open in the pod");
        let (mut n, mut errors) = (0usize, Vec::new());
        while !stop.load(Ordering::SeqCst) || n < 200 {
            let rec = format!("{n:08}\n");
            if let Err(e) = f.write_all(rec.as_bytes()).and_then(|()| f.sync_data()) {
                errors.push(format!("record {n}: {e}"));
                break;
            }
            n += 1;
            std::thread::sleep(Duration::from_millis(2));
        }
        (n, errors)
    })
}

fn check_records(data: &[u8], n: usize) {
    assert_eq!(data.len(), n * 9, "record file of {n} records has {} bytes", data.len());
    for (i, rec) in data.chunks(9).enumerate() {
        assert_eq!(rec, format!("{i:08}\n").as_bytes(), "record {i}");
    }
}

#[test]
fn two_nodes_share_a_volume_through_restarts_and_leave_nothing_behind() {
    let mut c = Cluster::with_opts(
        "csi-kubelet",
        Opts { server_args: vec!["--gc-interval".into(), "200ms".into()], ..Default::default() },
    );
    let token = c.token();
    let ctl = CsiDriver::start(&c, "controller", "");
    // Node 1 runs its workers from a copy of the binary, which the test later replaces.
    let bin_dir = c.dir.join("bin");
    std::fs::create_dir_all(&bin_dir).expect("bin dir");
    let worker_bin = bin_dir.join("strata");
    std::fs::copy(strata_bin(), &worker_bin).expect("copy strata");
    let mut n1 = CsiDriver::start_with(&c, "node", "node-1", &["--worker-bin", worker_bin.to_str().expect("utf-8")]);
    let n2 = CsiDriver::start(&c, "node", "node-2");
    // Replacing a worker is logged as a warning: expected here, and the point of the test.
    n1.allow_log("FUSE worker exited; starting a replacement");

    // Provision, as the external provisioner does.
    let vol =
        provision(&ctl, "pvc-2f1c7a9e-5b0d-4d6e-9a43-0c5e1b7d8f21", 64 * MIB, Mode::MultiNodeMultiWriter, &[], &token);
    let id = vol.volume_id.clone();
    assert_eq!(vol.capacity_bytes, 64 * MIB);

    // Stage and publish on both nodes, as their kubelets do.
    let pod = |d: &CsiDriver, name: &str| -> PathBuf {
        let k = Kubelet::new(d, &id, Mode::MultiNodeMultiWriter);
        k.stage(&token, &vol.volume_context).expect("NodeStageVolume");
        let target = d.dir.join(format!("pods/{name}/volumes/kubernetes.io~csi/{id}/mount"));
        k.publish(&target);
        target
    };
    let (a, b) = (pod(&n1, "a"), pod(&n2, "b"));

    // What one pod closes, the other reads exactly.
    let data = random_bytes(15, 5 * (1 << 20) + 333);
    std::fs::write(a.join("shared.bin"), &data).expect("write in pod a");
    assert_bytes_eq(&read_all(&b.join("shared.bin")), &data, "pod b reads pod a's file");

    // Online expansion shows in both pods' statfs.
    assert_eq!(statvfs_total(&a), 64 << 20);
    let grown = ctl
        .block_on(ctl.controller().controller_expand_volume(pb::ControllerExpandVolumeRequest {
            volume_id: id.clone(),
            capacity_range: Some(pb::CapacityRange { required_bytes: 128 * MIB, limit_bytes: 0 }),
            secrets: secrets(&token),
            ..Default::default()
        }))
        .expect("ControllerExpandVolume")
        .into_inner();
    assert_eq!(grown.capacity_bytes, 128 * MIB);
    // As the kubelet does when the controller asks for node expansion.
    assert!(grown.node_expansion_required);
    for (d, target) in [(&n1, &a), (&n2, &b)] {
        let r = d
            .block_on(d.node().node_expand_volume(pb::NodeExpandVolumeRequest {
                volume_id: id.clone(),
                volume_path: target.display().to_string(),
                capacity_range: Some(pb::CapacityRange { required_bytes: 128 * MIB, limit_bytes: 0 }),
                ..Default::default()
            }))
            .expect("NodeExpandVolume")
            .into_inner();
        assert_eq!(r.capacity_bytes, 128 * MIB);
    }
    assert!(wait_until(Duration::from_secs(5), || statvfs_total(&a) == 128 << 20 && statvfs_total(&b) == 128 << 20));

    // A pod on node 1 keeps writing while its node plugin is killed and restarted, its FUSE
    // worker is killed, and then a new worker binary takes over.
    let stop = Arc::new(AtomicBool::new(false));
    let w = writer(a.join("records"), stop.clone());
    std::thread::sleep(Duration::from_millis(300));
    n1.restart();
    std::thread::sleep(Duration::from_millis(300));
    let first = worker_pid(&n1);
    // SAFETY: plain kill(2) of the FUSE worker this test's plugin started.
    assert_eq!(unsafe { libc::kill(first, libc::SIGKILL) }, 0);
    assert!(wait_until(Duration::from_secs(10), || worker_pid(&n1) != first), "worker not replaced");
    std::thread::sleep(Duration::from_millis(300));
    let staged_new = bin_dir.join("strata.new");
    std::fs::copy(strata_bin(), &staged_new).expect("copy new binary");
    std::fs::rename(&staged_new, &worker_bin).expect("install new binary");
    let new_ino = std::fs::metadata(&worker_bin).expect("new binary").ino();
    let second = worker_pid(&n1);
    // SAFETY: as above; SIGTERM asks the worker to hand over.
    assert_eq!(unsafe { libc::kill(second, libc::SIGTERM) }, 0);
    assert!(wait_until(Duration::from_secs(10), || worker_pid(&n1) != second), "worker not handed over");
    let third = worker_pid(&n1);
    let exe = std::fs::metadata(format!("/proc/{third}/exe")).expect("worker exe");
    assert_eq!(exe.ino(), new_ino, "the replacement runs the new binary");
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    let (n, errors) = w.join().expect("writer");
    assert!(errors.is_empty(), "the pod saw errors: {errors:?}");
    check_records(&read_all(&a.join("records")), n);
    check_records(&read_all(&b.join("records")), n);
    assert_bytes_eq(&read_all(&a.join("shared.bin")), &data, "pod a after the restarts");

    // Volume statistics: bytes against the quota, and a condition.
    let stats = n2
        .block_on(n2.node().node_get_volume_stats(pb::NodeGetVolumeStatsRequest {
            volume_id: id.clone(),
            volume_path: b.display().to_string(),
            ..Default::default()
        }))
        .expect("NodeGetVolumeStats")
        .into_inner();
    let bytes = stats.usage.iter().find(|u| u.unit == pb::volume_usage::Unit::Bytes as i32).expect("bytes");
    assert_eq!(bytes.total, 128 * MIB);
    assert!(bytes.used >= data.len() as i64, "used {} < {}", bytes.used, data.len());
    assert!(stats.volume_condition.is_some_and(|c| !c.abnormal));

    // Take it all down, as Kubernetes does when the pods and the claim go.
    for (d, target) in [(&n1, &a), (&n2, &b)] {
        let k = Kubelet::new(d, &id, Mode::MultiNodeMultiWriter);
        k.unpublish(target);
        k.unstage();
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(!mounts.contains(&c.dir.display().to_string()), "mounts left behind:\n{mounts}");
    ctl.block_on(
        ctl.controller().delete_volume(pb::DeleteVolumeRequest { volume_id: id.clone(), secrets: secrets(&token) }),
    )
    .expect("DeleteVolume");
    assert!(!c.cli(&["volume", "list"]).contains(&id), "volume still listed");
    let blocks = c.data.join("blocks");
    assert!(wait_until(Duration::from_secs(20), || !dir_has_files(&blocks)), "blocks left in {}", blocks.display());
    drop((n1, n2, ctl));
    let _ = &mut c;
}

fn stats(d: &CsiDriver, id: &str, path: &Path) -> pb::NodeGetVolumeStatsResponse {
    d.block_on(d.node().node_get_volume_stats(pb::NodeGetVolumeStatsRequest {
        volume_id: id.to_string(),
        volume_path: path.display().to_string(),
        ..Default::default()
    }))
    .expect("NodeGetVolumeStats")
    .into_inner()
}

fn condition(r: &pb::NodeGetVolumeStatsResponse) -> (bool, String) {
    let c = r.volume_condition.clone().expect("a volume condition");
    (c.abnormal, c.message)
}

#[test]
fn a_mount_lost_with_its_plugin_is_reported_and_served_again_after_the_pod_restarts() {
    let mut c = Cluster::new("csi-lost");
    let token = c.token();
    let ctl = CsiDriver::start(&c, "controller", "");
    let mut n = CsiDriver::start(&c, "node", "node-1");
    n.allow_log("the staged volume's worker is gone; mounting it again");
    n.allow_log("cannot take the worker's connection");
    n.allow_log("strata server unreachable; retrying");
    let id = provision(&ctl, "pvc-lost", 32 * MIB, Mode::SingleNodeWriter, &[], &token).volume_id;
    fn kubelet<'a>(n: &'a CsiDriver, id: &str) -> Kubelet<'a> {
        Kubelet::new(n, id, Mode::SingleNodeWriter)
    }
    kubelet(&n, &id).stage(&token, &HashMap::new()).expect("NodeStageVolume");
    // ReadWriteOnce: a second node may not stage it while the first has it mounted.
    let other = CsiDriver::start(&c, "node", "node-2");
    let refused =
        kubelet(&other, &id).stage(&token, &HashMap::new()).expect_err("a single-node volume staged on a second node");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(refused.message().contains("csi:node-1:"), "{}", refused.message());
    drop(other);
    let a = n.dir.join("pods/a/mount");
    kubelet(&n, &id).publish(&a);
    let data = random_bytes(3, 700_000);
    std::fs::write(a.join("kept"), &data).expect("write");
    assert!(!condition(&stats(&n, &id, &a)).0, "healthy volume reported abnormal");

    // The server goes away: the condition says so within the call's time, and recovers.
    c.kill9_server();
    let (abnormal, why) = condition(&stats(&n, &id, &a));
    assert!(abnormal && why.contains("unreachable"), "server down: {why}");
    c.start_server();
    assert!(
        wait_until(Duration::from_secs(20), || !condition(&stats(&n, &id, &a)).0),
        "the volume did not recover with its server"
    );

    // The plugin and its worker die together (a container restart): the kernel connection
    // goes with the last descriptor. The restarted plugin says so for the old mount, and mounts
    // the volume afresh for the pod's next start.
    let pid = worker_pid(&n);
    n.kill9();
    // SAFETY: plain kill(2) of the FUSE worker the test's plugin started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    assert!(wait_until(Duration::from_secs(5), || !Path::new(&format!("/proc/{pid}")).exists()
        || std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z"))));
    n.restart();
    let (abnormal, why) = condition(&stats(&n, &id, &a));
    assert!(abnormal, "a dead mount reported healthy");
    assert!(why.contains("not connected") || why.contains("statfs"), "dead mount: {why}");
    kubelet(&n, &id).unpublish(&a);
    let a2 = n.dir.join("pods/a2/mount");
    kubelet(&n, &id).publish(&a2);
    assert_bytes_eq(&read_all(&a2.join("kept")), &data, "the restarted pod reads what was written");
    assert!(!condition(&stats(&n, &id, &a2)).0);

    kubelet(&n, &id).unpublish(&a2);
    kubelet(&n, &id).unstage();
    ctl.block_on(ctl.controller().delete_volume(pb::DeleteVolumeRequest { volume_id: id, secrets: secrets(&token) }))
        .expect("DeleteVolume");
}

#[test]
fn storage_class_parameters_reach_the_volume_and_retain_keeps_its_data() {
    let c = Cluster::with_opts(
        "csi-retain",
        Opts { server_args: vec!["--gc-interval".into(), "200ms".into()], ..Default::default() },
    );
    let token = c.token();
    let d = CsiDriver::start(&c, "all", "node-1");
    let params = [("strata.io/reclaim", "retain"), ("strata.io/inodes", "1000"), ("strata.io/class", "default")];
    let vol = provision(&d, "pvc-retained", 16 * MIB, Mode::MultiNodeMultiWriter, &params, &token);
    let described: serde_json::Value =
        serde_json::from_str(&c.cli(&["volume", "describe", &vol.volume_id, "-o", "json"])).expect("json");
    assert_eq!(described["reclaim"], "retain", "{described}");
    assert_eq!(described["inode_limit"], 1000, "{described}");
    assert_eq!(described["capacity"], 16 << 20, "{described}");

    // Data written through a pod stays after the volume is deleted: the class's reclaim policy.
    let k = Kubelet::new(&d, &vol.volume_id, Mode::MultiNodeMultiWriter);
    k.stage(&token, &vol.volume_context).expect("NodeStageVolume");
    let target = d.dir.join("pods/p/mount");
    k.publish(&target);
    std::fs::write(target.join("model.bin"), random_bytes(9, 3 << 20)).expect("write");
    k.unpublish(&target);
    k.unstage();
    d.block_on(
        d.controller()
            .delete_volume(pb::DeleteVolumeRequest { volume_id: vol.volume_id.clone(), secrets: secrets(&token) }),
    )
    .expect("DeleteVolume");
    assert!(!c.cli(&["volume", "list"]).contains(&vol.volume_id), "volume still listed");
    std::thread::sleep(Duration::from_secs(1));
    assert!(dir_has_files(&c.data.join("blocks")), "a retained volume's blocks were collected");
}

/// CreateVolume with everything given.
fn provision_req(d: &CsiDriver, req: pb::CreateVolumeRequest) -> Result<pb::Volume, tonic::Status> {
    d.block_on(d.controller().create_volume(req)).map(|r| r.into_inner().volume.expect("volume"))
}

fn claim(name: &str, bytes: i64, mode: Mode, token: &str) -> pb::CreateVolumeRequest {
    pb::CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(pb::CapacityRange { required_bytes: bytes, limit_bytes: 0 }),
        volume_capabilities: vec![mount_cap(mode)],
        secrets: secrets(token),
        ..Default::default()
    }
}

/// Every file under `dir` with its content, by relative path.
fn files_of(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            if e.file_type().expect("type").is_dir() {
                todo.push(p);
            } else {
                let rel = p.strip_prefix(dir).expect("under").display().to_string();
                out.insert(rel, std::fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display())));
            }
        }
    }
    out
}

#[track_caller]
fn same_files(got: &std::collections::BTreeMap<String, Vec<u8>>, want: &std::collections::BTreeMap<String, Vec<u8>>) {
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>());
    for (k, v) in want {
        assert_bytes_eq(&got[k], v, k);
    }
}

#[track_caller]
fn erofs(r: std::io::Result<()>, what: &str) {
    let e = r.expect_err(what);
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{what}: {e}");
}

/// Snapshots and clones as Kubernetes uses them, with real mounts on two nodes: a
/// VolumeSnapshot of a claim, claims made from it and from the claim itself (each reads what
/// its source had, and writes on its own), and a pre-provisioned PV of the snapshot
/// (read-only).
#[test]
fn snapshots_and_clones_mount_read_as_taken() {
    let c = Cluster::new("csi-views");
    c.cli(&["scope", "create", "ml"]);
    c.cli(&["scope", "create", "ml/a"]);
    let ta = std::fs::read_to_string(c.issue_token_in("team-a", "editor", "ml/a").0).expect("token").trim().to_string();
    let ctl = CsiDriver::start(&c, "controller", "ctl");
    let n1 = CsiDriver::start(&c, "node", "node-1");
    let n2 = CsiDriver::start(&c, "node", "node-2");
    let rwx = Mode::MultiNodeMultiWriter;

    // team-a's claim, written by a pod on node-1.
    let src = provision(&ctl, "pvc-src", 64 * MIB, rwx, &[], &ta);
    let k_src = Kubelet::at(&n1, &src.volume_id, rwx, "src");
    k_src.stage(&ta, &src.volume_context).expect("stage src");
    let pod_src = n1.dir.join("pods/src/mount");
    k_src.publish(&pod_src);
    std::fs::create_dir_all(pod_src.join("dir")).expect("mkdir");
    for (name, seed, len) in [("a", 1, 1 << 20), ("b", 2, 5000), ("dir/c", 3, 70_000)] {
        write_synced(&pod_src.join(name), &random_bytes(seed, len)).expect("write");
    }
    let at_snapshot = files_of(&pod_src);

    // The VolumeSnapshot, then the claim changes.
    let snap = ctl
        .block_on(ctl.controller().create_snapshot(pb::CreateSnapshotRequest {
            source_volume_id: src.volume_id.clone(),
            name: "snapshot-1".into(),
            secrets: secrets(&ta),
            ..Default::default()
        }))
        .expect("CreateSnapshot")
        .into_inner()
        .snapshot
        .expect("snapshot");
    write_synced(&pod_src.join("a"), b"changed").expect("overwrite");
    std::fs::remove_file(pod_src.join("b")).expect("unlink");
    write_synced(&pod_src.join("new"), b"after the snapshot").expect("create");
    let after = files_of(&pod_src);

    // A claim from the snapshot (node-2) and one from the claim (node-1).
    let mut req = claim("pvc-from-snap", 64 * MIB, rwx, &ta);
    req.volume_content_source = Some(pb::VolumeContentSource {
        r#type: Some(pb::volume_content_source::Type::Snapshot(pb::volume_content_source::SnapshotSource {
            snapshot_id: snap.snapshot_id.clone(),
        })),
    });
    let from_snap = provision_req(&ctl, req).expect("CreateVolume from the snapshot");
    let mut req = claim("pvc-from-vol", 64 * MIB, rwx, &ta);
    req.volume_content_source = Some(pb::VolumeContentSource {
        r#type: Some(pb::volume_content_source::Type::Volume(pb::volume_content_source::VolumeSource {
            volume_id: src.volume_id.clone(),
        })),
    });
    let from_vol = provision_req(&ctl, req).expect("CreateVolume from the claim");
    let k_fs = Kubelet::at(&n2, &from_snap.volume_id, rwx, "from-snap");
    k_fs.stage(&ta, &from_snap.volume_context).expect("stage clone of the snapshot");
    let pod_fs = n2.dir.join("pods/from-snap/mount");
    k_fs.publish(&pod_fs);
    let k_fv = Kubelet::at(&n1, &from_vol.volume_id, rwx, "from-vol");
    k_fv.stage(&ta, &from_vol.volume_context).expect("stage clone of the claim");
    let pod_fv = n1.dir.join("pods/from-vol/mount");
    k_fv.publish(&pod_fv);
    same_files(&files_of(&pod_fs), &at_snapshot);
    same_files(&files_of(&pod_fv), &after);
    // Writes are each volume's own.
    write_synced(&pod_fs.join("a"), b"the clone's own").expect("write the clone");
    write_synced(&pod_fv.join("only-here"), b"x").expect("write the other clone");
    write_synced(&pod_src.join("dir/c"), b"the source's own").expect("write the source");
    assert_eq!(std::fs::read(pod_fs.join("a")).expect("read"), b"the clone's own");
    assert_bytes_eq(&std::fs::read(pod_fs.join("dir/c")).expect("read"), &at_snapshot["dir/c"], "clone dir/c");
    assert_eq!(std::fs::read(pod_src.join("a")).expect("read"), b"changed");
    assert!(!pod_src.join("only-here").exists());

    // A pre-provisioned PV of the snapshot (volumeHandle VOLUME@SNAPSHOT): read-only.
    let ro = Mode::MultiNodeReaderOnly;
    let k_snap = Kubelet::at(&n2, &snap.snapshot_id, ro, "snap");
    k_snap.stage(&ta, &HashMap::new()).expect("stage the snapshot");
    let pod_snap = n2.dir.join("pods/snap/mount");
    k_snap.publish(&pod_snap);
    same_files(&files_of(&pod_snap), &at_snapshot);
    erofs(std::fs::write(pod_snap.join("a"), b"x"), "write to a snapshot");

    for (k, pod) in [(&k_snap, &pod_snap), (&k_fv, &pod_fv), (&k_fs, &pod_fs), (&k_src, &pod_src)] {
        k.unpublish(pod);
        k.unstage();
    }
}

/// A data volume claimed ReadOnlyMany through a StorageClass by a namespace it is shared with:
/// read on two nodes, writes refused, stats, expansion refused, deleting the claim leaves the
/// data volume; a namespace it is not shared with and a writable access mode are refused.
#[test]
fn data_volume_claims_read_only_on_two_nodes() {
    let c = Cluster::new("csi-dv");
    for s in ["ml", "ml/a", "ml/b", "ml/c"] {
        c.cli(&["scope", "create", s]);
    }
    let read = |f: &Path| std::fs::read_to_string(f).expect("token").trim().to_string();
    let (a_file, _) = c.issue_token_in("team-a", "editor", "ml/a");
    let (ta, tb, tc) = (
        read(&a_file),
        read(&c.issue_token_in("team-b", "editor", "ml/b").0),
        read(&c.issue_token_in("team-c", "editor", "ml/c").0),
    );
    let ctl = CsiDriver::start(&c, "controller", "ctl");
    let n1 = CsiDriver::start(&c, "node", "node-1");
    let n2 = CsiDriver::start(&c, "node", "node-2");
    let (rwx, ro) = (Mode::MultiNodeMultiWriter, Mode::MultiNodeReaderOnly);

    // team-a makes a data volume of another claim (one without snapshots or clones of its
    // own) and shares it with team-b.
    let data = provision(&ctl, "pvc-data", 64 * MIB, rwx, &[], &ta);
    let k_data = Kubelet::at(&n1, &data.volume_id, rwx, "data");
    k_data.stage(&ta, &data.volume_context).expect("stage data");
    let pod_data = n1.dir.join("pods/data/mount");
    k_data.publish(&pod_data);
    std::fs::create_dir_all(pod_data.join("dir")).expect("mkdir");
    for (name, seed, len) in [("a", 11, 1 << 20), ("new", 12, 5000), ("dir/c", 13, 70_000)] {
        write_synced(&pod_data.join(name), &random_bytes(seed, len)).expect("write");
    }
    c.cli_ok_as(&a_file, &["datavolume", "create", "ds", "--from", &data.volume_id]);
    c.cli(&["datavolume", "share", "ds", "ml/b"]);
    let in_ds = files_of(&pod_data);
    let dv_params = [("strata.io/datavolume", "ds")];
    let dv = provision(&ctl, "pvc-ds", 10 * MIB, ro, &dv_params, &tb);
    assert_eq!(dv.volume_id, "dv:ds@1");
    assert_eq!(dv.capacity_bytes, 10 * MIB, "the claim's size, to bind");
    // team-c's namespace: not shared with it. A writable access mode: refused.
    let e = provision_req(&ctl, {
        let mut r = claim("pvc-ds-c", 10 * MIB, ro, &tc);
        r.parameters = dv_params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        r
    })
    .expect_err("not shared with team-c");
    assert!(matches!(e.code(), tonic::Code::NotFound | tonic::Code::PermissionDenied), "{e:?}");
    ctl.allow_refusal("CreateVolume", &format!("{:?}", e.code()));
    let e = provision_req(&ctl, {
        let mut r = claim("pvc-ds-rw", 10 * MIB, rwx, &tb);
        r.parameters = dv_params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        r
    })
    .expect_err("read-write");
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    ctl.allow_refusal("CreateVolume", "InvalidArgument");

    // Staged and published on both nodes with team-b's token: exactly the data, read-only.
    let k_ds1 = Kubelet::at(&n1, &dv.volume_id, ro, "ds");
    let k_ds2 = Kubelet::at(&n2, &dv.volume_id, ro, "ds");
    let (pod_ds1, pod_ds2) = (n1.dir.join("pods/ds/mount"), n2.dir.join("pods/ds/mount"));
    for (k, pod) in [(&k_ds1, &pod_ds1), (&k_ds2, &pod_ds2)] {
        k.stage(&tb, &dv.volume_context).expect("stage the data volume");
        k.publish(pod);
        same_files(&files_of(pod), &in_ds);
        erofs(std::fs::write(pod.join("a"), b"x"), "overwrite in a data volume");
        erofs(std::fs::write(pod.join("z"), b"x"), "create in a data volume");
        erofs(std::fs::remove_file(pod.join("new")), "unlink in a data volume");
    }
    let st = stats(&n1, &dv.volume_id, &pod_ds1);
    assert!(!condition(&st).0 && !st.usage.is_empty(), "{st:?}");
    // A pre-provisioned PV naming the data volume without a version (its latest).
    let k_latest = Kubelet::at(&n2, "dv:ds", ro, "ds-latest");
    k_latest.stage(&tb, &HashMap::new()).expect("stage dv:ds");
    let pod_latest = n2.dir.join("pods/ds-latest/mount");
    k_latest.publish(&pod_latest);
    same_files(&files_of(&pod_latest), &in_ds);

    // Expanding a view is refused, at the controller and at the node.
    let e = ctl
        .block_on(ctl.controller().controller_expand_volume(pb::ControllerExpandVolumeRequest {
            volume_id: dv.volume_id.clone(),
            capacity_range: Some(pb::CapacityRange { required_bytes: 20 * MIB, limit_bytes: 0 }),
            secrets: secrets(&tb),
            volume_capability: None,
        }))
        .expect_err("expand a data volume");
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    ctl.allow_refusal("ControllerExpandVolume", "InvalidArgument");
    let e = n1
        .block_on(n1.node().node_expand_volume(pb::NodeExpandVolumeRequest {
            volume_id: dv.volume_id.clone(),
            volume_path: pod_ds1.display().to_string(),
            capacity_range: Some(pb::CapacityRange { required_bytes: 20 * MIB, limit_bytes: 0 }),
            ..Default::default()
        }))
        .expect_err("node-expand a data volume");
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    n1.allow_refusal("NodeExpandVolume", "InvalidArgument");

    // Taken down; deleting the claim leaves the data volume to its owner.
    for (k, pod) in [(&k_latest, &pod_latest), (&k_ds2, &pod_ds2), (&k_ds1, &pod_ds1), (&k_data, &pod_data)] {
        k.unpublish(pod);
        k.unstage();
    }
    ctl.block_on(
        ctl.controller()
            .delete_volume(pb::DeleteVolumeRequest { volume_id: dv.volume_id.clone(), secrets: secrets(&tb) }),
    )
    .expect("DeleteVolume of the data volume's claim");
    let d: serde_json::Value =
        serde_json::from_str(&c.cli_ok_as(&a_file, &["datavolume", "describe", "ds", "-o", "json"])).expect("json");
    assert_eq!(d["versions"].as_array().map(Vec::len), Some(1), "{d}");
}
