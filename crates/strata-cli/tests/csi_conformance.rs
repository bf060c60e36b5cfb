//! Conformance of the Kubernetes CSI driver (`strata csi`) to the CSI specification v1.12: the
//! Identity, Controller and Node services over the driver's unix socket, against one real
//! `strata server` per test, for every capability the driver advertises (see
//! `identity_and_capabilities`). Each test groups related checks on one cluster and one driver
//! (`--mode all`); the node's mounts are real FUSE mounts under the cluster's directory.
mod common;

use std::collections::HashMap;
use std::fmt::Debug;
use std::io::Write;
use std::path::Path;

use common::csi::*;
use common::*;
use strata_csi::pb;
use tonic::{Code, Response, Status};

const MIB: i64 = 1 << 20;

// ---- helpers ----

/// Asserts that `r` failed with `code` and allows the driver's WARN line for that refusal.
#[track_caller]
fn refused<T: Debug>(d: &CsiDriver, method: &str, r: Result<Response<T>, Status>, code: Code) -> Status {
    match r {
        Ok(v) => panic!("{method}: expected {code:?}, got OK {:?}", v.into_inner()),
        Err(s) => {
            assert_eq!(s.code(), code, "{method}: {s:?}");
            d.allow_refusal(method, &format!("{code:?}"));
            s
        }
    }
}

#[track_caller]
fn ok<T>(what: &str, r: Result<Response<T>, Status>) -> T {
    r.unwrap_or_else(|s| panic!("{what}: {s:?}")).into_inner()
}

fn range(required: i64, limit: i64) -> Option<pb::CapacityRange> {
    Some(pb::CapacityRange { required_bytes: required, limit_bytes: limit })
}

fn create_req(name: &str, bytes: i64, mode: Mode, token: &str) -> pb::CreateVolumeRequest {
    pb::CreateVolumeRequest {
        name: name.into(),
        capacity_range: range(bytes, 0),
        volume_capabilities: vec![mount_cap(mode)],
        secrets: secrets(token),
        ..Default::default()
    }
}

fn create(d: &CsiDriver, req: pb::CreateVolumeRequest) -> Result<Response<pb::CreateVolumeResponse>, Status> {
    d.block_on(d.controller().create_volume(req))
}

/// Creates a volume that must be created; the CSI volume.
#[track_caller]
fn create_ok(d: &CsiDriver, name: &str, bytes: i64, mode: Mode, token: &str) -> pb::Volume {
    ok("CreateVolume", create(d, create_req(name, bytes, mode, token))).volume.expect("volume")
}

fn delete(d: &CsiDriver, id: &str, token: Option<&str>) -> Result<Response<pb::DeleteVolumeResponse>, Status> {
    let req = pb::DeleteVolumeRequest { volume_id: id.into(), secrets: token.map(secrets).unwrap_or_default() };
    d.block_on(d.controller().delete_volume(req))
}

fn expand(
    d: &CsiDriver,
    id: &str,
    cap: Option<pb::CapacityRange>,
    token: &str,
) -> Result<Response<pb::ControllerExpandVolumeResponse>, Status> {
    let req = pb::ControllerExpandVolumeRequest {
        volume_id: id.into(),
        capacity_range: cap,
        secrets: secrets(token),
        volume_capability: None,
    };
    d.block_on(d.controller().controller_expand_volume(req))
}

/// `strata volume describe NAME -o json` as the admin (None: no such volume).
fn describe(c: &Cluster, name: &str) -> Option<serde_json::Value> {
    let out = c.cli_as(&c.token_file, &["volume", "describe", name, "-o", "json"]);
    out.status.success().then(|| serde_json::from_slice(&out.stdout).expect("volume JSON"))
}

fn list(d: &CsiDriver, max: i32, start: &str) -> Result<Response<pb::ListVolumesResponse>, Status> {
    d.block_on(d.controller().list_volumes(pb::ListVolumesRequest { max_entries: max, starting_token: start.into() }))
}

fn ids(r: &pb::ListVolumesResponse) -> Vec<String> {
    r.entries.iter().map(|e| e.volume.as_ref().expect("volume").volume_id.clone()).collect()
}

fn volume_source(id: &str) -> pb::VolumeContentSource {
    pb::VolumeContentSource {
        r#type: Some(pb::volume_content_source::Type::Volume(pb::volume_content_source::VolumeSource {
            volume_id: id.into(),
        })),
    }
}

fn snapshot_source(id: &str) -> pb::VolumeContentSource {
    pb::VolumeContentSource {
        r#type: Some(pb::volume_content_source::Type::Snapshot(pb::volume_content_source::SnapshotSource {
            snapshot_id: id.into(),
        })),
    }
}

fn statvfs(p: &Path) -> libc::statvfs {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).expect("path");
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: valid path and a buffer of the right size, initialised on success.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    assert_eq!(rc, 0, "statvfs {}: {}", p.display(), std::io::Error::last_os_error());
    // SAFETY: the call succeeded.
    unsafe { st.assume_init() }
}

// ---- Identity ----

/// GetPluginInfo, GetPluginCapabilities, Probe, the controller's and the node's capabilities,
/// NodeGetInfo, and the calls the driver does not implement.
#[test]
fn identity_and_capabilities() {
    let c = Cluster::new("csi-ident");
    let d = CsiDriver::start(&c, "all", "node-a");
    let mut id = d.identity();

    let info = ok("GetPluginInfo", d.block_on(id.get_plugin_info(pb::GetPluginInfoRequest {})));
    assert_eq!(info.name, "csi.strata.io");
    assert!(!info.vendor_version.is_empty(), "vendor_version is required");

    let caps = ok("GetPluginCapabilities", d.block_on(id.get_plugin_capabilities(pb::GetPluginCapabilitiesRequest {})));
    use pb::plugin_capability::{Type as PT, service, volume_expansion};
    let services: Vec<i32> = caps
        .capabilities
        .iter()
        .filter_map(|c| match &c.r#type {
            Some(PT::Service(s)) => Some(s.r#type),
            _ => None,
        })
        .collect();
    assert_eq!(services, vec![service::Type::ControllerService as i32], "{caps:?}");
    let expansion: Vec<i32> = caps
        .capabilities
        .iter()
        .filter_map(|c| match &c.r#type {
            Some(PT::VolumeExpansion(e)) => Some(e.r#type),
            _ => None,
        })
        .collect();
    assert_eq!(expansion, vec![volume_expansion::Type::Online as i32], "{caps:?}");

    let probe = ok("Probe", d.block_on(id.probe(pb::ProbeRequest {})));
    assert_eq!(probe.ready, Some(true));

    let mut ctl = d.controller();
    let cc = ok(
        "ControllerGetCapabilities",
        d.block_on(ctl.controller_get_capabilities(pb::ControllerGetCapabilitiesRequest {})),
    );
    use pb::controller_service_capability::{Type as CT, rpc::Type as CR};
    let mut got: Vec<i32> = cc
        .capabilities
        .iter()
        .filter_map(|c| match &c.r#type {
            Some(CT::Rpc(r)) => Some(r.r#type),
            _ => None,
        })
        .collect();
    got.sort();
    let mut want = [
        CR::CreateDeleteVolume,
        CR::ListVolumes,
        CR::GetCapacity,
        CR::ExpandVolume,
        CR::GetVolume,
        CR::ModifyVolume,
        CR::CreateDeleteSnapshot,
        CR::ListSnapshots,
        CR::CloneVolume,
    ]
    .map(|t| t as i32);
    want.sort();
    assert_eq!(got, want);

    let mut node = d.node();
    let nc = ok("NodeGetCapabilities", d.block_on(node.node_get_capabilities(pb::NodeGetCapabilitiesRequest {})));
    use pb::node_service_capability::{Type as NT, rpc::Type as NR};
    let got: Vec<i32> = nc
        .capabilities
        .iter()
        .filter_map(|c| match &c.r#type {
            Some(NT::Rpc(r)) => Some(r.r#type),
            _ => None,
        })
        .collect();
    for want in [NR::StageUnstageVolume, NR::GetVolumeStats, NR::ExpandVolume, NR::VolumeCondition] {
        assert!(got.contains(&(want as i32)), "node capabilities {got:?} lack {want:?}");
    }

    let ni = ok("NodeGetInfo", d.block_on(node.node_get_info(pb::NodeGetInfoRequest {})));
    assert_eq!(ni.node_id, "node-a");
    assert!(ni.max_volumes_per_node >= 0);

    // What the driver does not advertise is UNIMPLEMENTED.
    let r = d.block_on(ctl.controller_publish_volume(pb::ControllerPublishVolumeRequest {
        volume_id: c.volume.clone(),
        node_id: "node-a".into(),
        volume_capability: Some(mount_cap(Mode::MultiNodeMultiWriter)),
        ..Default::default()
    }));
    assert_eq!(r.expect_err("ControllerPublishVolume").code(), Code::Unimplemented);
    let r = d.block_on(ctl.controller_unpublish_volume(pb::ControllerUnpublishVolumeRequest {
        volume_id: c.volume.clone(),
        ..Default::default()
    }));
    assert_eq!(r.expect_err("ControllerUnpublishVolume").code(), Code::Unimplemented);

    // ControllerGetVolume (GET_VOLUME is advertised).
    let v = ok(
        "ControllerGetVolume",
        d.block_on(ctl.controller_get_volume(pb::ControllerGetVolumeRequest { volume_id: c.volume.clone() })),
    );
    assert_eq!(v.volume.expect("volume").volume_id, c.volume);
    let r = d.block_on(ctl.controller_get_volume(pb::ControllerGetVolumeRequest { volume_id: "nope".into() }));
    refused(&d, "ControllerGetVolume", r, Code::NotFound);
    let r = d.block_on(ctl.controller_get_volume(pb::ControllerGetVolumeRequest { volume_id: String::new() }));
    refused(&d, "ControllerGetVolume", r, Code::InvalidArgument);
}

/// A controller-only and a node-only process serve only their services; a node's volume limit
/// is reported and enforced.
#[test]
fn modes_and_node_limit() {
    let c = Cluster::new("csi-modes");
    let m = free_port();
    let ctl = CsiDriver::start_with(&c, "controller", "ctl", &["--metrics", &format!("127.0.0.1:{m}")]);
    let nd = CsiDriver::start_with(&c, "node", "node-b", &["--max-volumes", "1"]);
    let tok = c.token();

    for d in [&ctl, &nd] {
        let info = ok("GetPluginInfo", d.block_on(d.identity().get_plugin_info(pb::GetPluginInfoRequest {})));
        assert_eq!(info.name, "csi.strata.io");
        let p = ok("Probe", d.block_on(d.identity().probe(pb::ProbeRequest {})));
        assert_eq!(p.ready, Some(true));
    }
    let r = ctl.block_on(ctl.node().node_get_info(pb::NodeGetInfoRequest {}));
    assert_eq!(r.expect_err("no Node service in controller mode").code(), Code::Unimplemented);
    let r = nd.block_on(nd.controller().list_volumes(pb::ListVolumesRequest::default()));
    assert_eq!(r.expect_err("no Controller service in node mode").code(), Code::Unimplemented);

    let ni = ok("NodeGetInfo", nd.block_on(nd.node().node_get_info(pb::NodeGetInfoRequest {})));
    assert_eq!((ni.node_id.as_str(), ni.max_volumes_per_node), ("node-b", 1));
    let vols: Vec<NodeVol> = ["m1", "m2"]
        .iter()
        .map(|n| {
            let v = create_ok(&ctl, n, 8 * MIB, Mode::SingleNodeWriter, &tok);
            NodeVol { id: v.volume_id, ctx: v.volume_context, cap: mount_cap(Mode::SingleNodeWriter) }
        })
        .collect();
    let k = c.dir.join("kubelet-b");
    let mut node = nd.node();
    ok("NodeStageVolume", nd.block_on(node.node_stage_volume(stage_req(&vols[0], &k.join("s1"), &tok))));
    let r = nd.block_on(node.node_stage_volume(stage_req(&vols[1], &k.join("s2"), &tok)));
    refused(&nd, "NodeStageVolume", r, Code::ResourceExhausted);
    assert!(!mounted_at(&k.join("s2")));
    // Staging the same volume again is not a new volume.
    ok("NodeStageVolume again", nd.block_on(node.node_stage_volume(stage_req(&vols[0], &k.join("s1"), &tok))));
    ok("NodeUnstageVolume", nd.block_on(node.node_unstage_volume(unstage_req("m1", &k.join("s1")))));
    ok("NodeStageVolume m2", nd.block_on(node.node_stage_volume(stage_req(&vols[1], &k.join("s2"), &tok))));
    ok("NodeUnstageVolume m2", nd.block_on(node.node_unstage_volume(unstage_req("m2", &k.join("s2")))));

    // The controller's --metrics: every call it answered, by method, refusals among the errors.
    let mm = scrape(&format!("http://127.0.0.1:{m}/metrics"));
    let count =
        |method: &str| val(&mm, &format!("strata_csi_ops_durations_histogram_seconds_count{{method={method}}}"));
    // (The harness probes the driver once more while waiting for it.)
    assert_eq!((count("GetPluginInfo"), count("CreateVolume")), (1.0, 2.0));
    assert!(count("Probe") >= 1.0);
    assert_eq!(val(&mm, "strata_csi_ops_errors_total{method=NodeGetInfo}"), 1.0);
}

// ---- Controller ----

/// CreateVolume's required fields, idempotency, capacity and parameters; DeleteVolume.
#[test]
fn create_and_delete_volume() {
    let c = Cluster::new("csi-create");
    c.cli(&["storageclass", "create", "fast", "--compression", "lz4"]);
    let d = CsiDriver::start(&c, "all", "node-a");
    let tok = c.token();

    // Required fields.
    let mut r = create_req("", 8 * MIB, Mode::MultiNodeMultiWriter, &tok);
    let e = refused(&d, "CreateVolume", create(&d, r.clone()), Code::InvalidArgument);
    assert!(e.message().contains("name"), "{e:?}");
    r.name = "v1".into();
    r.volume_capabilities.clear();
    let e = refused(&d, "CreateVolume", create(&d, r.clone()), Code::InvalidArgument);
    assert!(e.message().contains("capabilit"), "{e:?}");
    r.volume_capabilities = vec![block_cap(Mode::SingleNodeWriter)];
    let e = refused(&d, "CreateVolume", create(&d, r.clone()), Code::InvalidArgument);
    assert!(e.message().contains("block"), "{e:?}");
    // A capability without an access mode.
    r.volume_capabilities = vec![pb::VolumeCapability {
        access_type: Some(pb::volume_capability::AccessType::Mount(Default::default())),
        access_mode: None,
    }];
    refused(&d, "CreateVolume", create(&d, r.clone()), Code::InvalidArgument);
    // One unsupported capability among supported ones refuses them all.
    r.volume_capabilities = vec![mount_cap(Mode::MultiNodeMultiWriter), block_cap(Mode::MultiNodeMultiWriter)];
    refused(&d, "CreateVolume", create(&d, r.clone()), Code::InvalidArgument);
    // No token in the secrets.
    let mut no_tok = create_req("v1", 8 * MIB, Mode::MultiNodeMultiWriter, &tok);
    no_tok.secrets.clear();
    refused(&d, "CreateVolume", create(&d, no_tok.clone()), Code::Unauthenticated);
    no_tok.secrets = secrets("  ");
    refused(&d, "CreateVolume", create(&d, no_tok), Code::Unauthenticated);
    assert!(describe(&c, "v1").is_none(), "nothing created by refused calls");

    // Created; the capacity is the volume's quota.
    let v1 = create_ok(&d, "v1", 8 * MIB, Mode::MultiNodeMultiWriter, &tok);
    assert_eq!(v1.volume_id, "v1");
    assert!(v1.capacity_bytes >= 8 * MIB, "{v1:?}");
    let desc = describe(&c, "v1").expect("v1 exists");
    assert_eq!(desc["capacity"].as_i64(), Some(v1.capacity_bytes), "{desc}");
    assert_eq!(desc["access_mode"], "ReadWriteMany", "{desc}");
    // Idempotent: same name and capacity, same volume.
    let again = create_ok(&d, "v1", 8 * MIB, Mode::MultiNodeMultiWriter, &tok);
    assert_eq!(again.volume_id, v1.volume_id);
    assert_eq!(again.capacity_bytes, v1.capacity_bytes);
    // Same name, a capacity it does not have: ALREADY_EXISTS, unchanged.
    let e = refused(
        &d,
        "CreateVolume",
        create(&d, create_req("v1", 16 * MIB, Mode::MultiNodeMultiWriter, &tok)),
        Code::AlreadyExists,
    );
    assert!(e.message().contains("v1"), "{e:?}");
    let mut lim = create_req("v1", 0, Mode::MultiNodeMultiWriter, &tok);
    lim.capacity_range = range(MIB, 4 * MIB);
    refused(&d, "CreateVolume", create(&d, lim), Code::AlreadyExists);
    // Same name, another class: ALREADY_EXISTS.
    let mut other_class = create_req("v1", 8 * MIB, Mode::MultiNodeMultiWriter, &tok);
    other_class.parameters.insert("strata.io/class".into(), "fast".into());
    refused(&d, "CreateVolume", create(&d, other_class), Code::AlreadyExists);
    assert_eq!(describe(&c, "v1").expect("v1")["capacity"].as_i64(), Some(v1.capacity_bytes));

    // A 128-byte name of characters Strata names cannot hold maps to one volume, idempotently.
    let odd: String = "Ünïcødé / spaces & *stars* :: ".chars().cycle().take(200).collect::<String>();
    let odd = {
        let mut s = String::new();
        for ch in odd.chars() {
            if s.len() + ch.len_utf8() > 128 {
                break;
            }
            s.push(ch);
        }
        while s.len() < 128 {
            s.push('x');
        }
        s
    };
    assert_eq!(odd.len(), 128);
    let o1 = create_ok(&d, &odd, 4 * MIB, Mode::SingleNodeWriter, &tok);
    let o2 = create_ok(&d, &odd, 4 * MIB, Mode::SingleNodeWriter, &tok);
    assert_eq!(o1.volume_id, o2.volume_id);
    assert_ne!(o1.volume_id, odd);
    assert!(describe(&c, &o1.volume_id).is_some(), "the digest name is a Strata volume");
    let mut odd2 = odd.clone();
    odd2.pop();
    odd2.push('y');
    let o3 = create_ok(&d, &odd2, 4 * MIB, Mode::SingleNodeWriter, &tok);
    assert_ne!(o3.volume_id, o1.volume_id, "names differing in their last byte map to different volumes");

    // Capacity ranges.
    let mut bad = create_req("v2", 0, Mode::MultiNodeMultiWriter, &tok);
    bad.capacity_range = range(16 * MIB, 8 * MIB);
    refused(&d, "CreateVolume", create(&d, bad.clone()), Code::OutOfRange);
    bad.capacity_range = range(-1, 0);
    refused(&d, "CreateVolume", create(&d, bad), Code::InvalidArgument);
    // Only a limit: a volume no bigger than it.
    let mut lim_only = create_req("v-lim", 0, Mode::MultiNodeMultiWriter, &tok);
    lim_only.capacity_range = range(0, 6 * MIB);
    let vl = ok("CreateVolume", create(&d, lim_only)).volume.expect("volume");
    assert!(vl.capacity_bytes > 0 && vl.capacity_bytes <= 6 * MIB, "{vl:?}");

    // A content source that does not exist (clones themselves: `snapshots_and_clones`).
    let mut clone = create_req("v-clone", 8 * MIB, Mode::MultiNodeMultiWriter, &tok);
    clone.volume_content_source = Some(volume_source("no-such-volume"));
    refused(&d, "CreateVolume", create(&d, clone), Code::NotFound);
    assert!(describe(&c, "v-clone").is_none());

    // Parameters.
    let mut unknown = create_req("v3", 8 * MIB, Mode::MultiNodeMultiWriter, &tok);
    unknown.parameters.insert("strata.io/colour".into(), "blue".into());
    let e = refused(&d, "CreateVolume", create(&d, unknown), Code::InvalidArgument);
    assert!(e.message().contains("strata.io/colour"), "{e:?}");
    let mut fast = create_req("v-fast", 8 * MIB, Mode::MultiNodeMultiWriter, &tok);
    fast.parameters.insert("strata.io/class".into(), "fast".into());
    // What the external-provisioner adds with --extra-create-metadata is accepted.
    fast.parameters.insert("csi.storage.k8s.io/pvc/name".into(), "data".into());
    fast.parameters.insert("csi.storage.k8s.io/pvc/namespace".into(), "default".into());
    fast.parameters.insert("csi.storage.k8s.io/pv/name".into(), "pvc-1".into());
    let vf = ok("CreateVolume", create(&d, fast)).volume.expect("volume");
    assert_eq!(describe(&c, "v-fast").expect("v-fast")["class"], "fast");
    assert_eq!(vf.volume_context.get("strata.io/class").map(String::as_str), Some("fast"), "{vf:?}");
    let mut nope = create_req("v4", 8 * MIB, Mode::MultiNodeMultiWriter, &tok);
    nope.parameters.insert("strata.io/class".into(), "no-such-class".into());
    let e = create(&d, nope).expect_err("unknown class");
    assert!(e.message().contains("no-such-class"), "{e:?}");
    assert_eq!(e.code(), Code::InvalidArgument, "an unknown class is an invalid parameter: {e:?}");
    d.allow_refusal("CreateVolume", &format!("{:?}", e.code()));
    assert!(describe(&c, "v4").is_none());

    // DeleteVolume.
    refused(&d, "DeleteVolume", delete(&d, "", Some(&tok)), Code::InvalidArgument);
    ok("DeleteVolume unknown", delete(&d, "no-such-volume", Some(&tok)));
    ok("DeleteVolume unknown odd id", delete(&d, "no such/volume ü", Some(&tok)));
    ok("DeleteVolume", delete(&d, "v1", Some(&tok)));
    assert!(describe(&c, "v1").is_none(), "v1 gone");
    ok("DeleteVolume again", delete(&d, "v1", Some(&tok)));
    ok("DeleteVolume odd", delete(&d, &o1.volume_id, Some(&tok)));
    assert!(describe(&c, &o1.volume_id).is_none());
    // A name free again is created afresh.
    let v1b = create_ok(&d, "v1", 16 * MIB, Mode::MultiNodeMultiWriter, &tok);
    assert!(v1b.capacity_bytes >= 16 * MIB);
}

/// ControllerExpandVolume and ValidateVolumeCapabilities.
#[test]
fn expand_and_validate() {
    let c = Cluster::new("csi-expand");
    let d = CsiDriver::start(&c, "all", "node-a");
    let tok = c.token();
    let v = create_ok(&d, "grow", 8 * MIB, Mode::MultiNodeMultiWriter, &tok);

    let r = ok("ControllerExpandVolume", expand(&d, "grow", range(32 * MIB, 0), &tok));
    assert!(r.capacity_bytes >= 32 * MIB, "{r:?}");
    assert_eq!(describe(&c, "grow").expect("grow")["capacity"].as_i64(), Some(r.capacity_bytes));
    // Idempotent.
    let r2 = ok("ControllerExpandVolume again", expand(&d, "grow", range(32 * MIB, 0), &tok));
    assert_eq!(r2.capacity_bytes, r.capacity_bytes);
    // Smaller than it is: the current capacity, no shrink.
    let r3 = ok("ControllerExpandVolume smaller", expand(&d, "grow", range(4 * MIB, 0), &tok));
    assert_eq!(r3.capacity_bytes, r.capacity_bytes);
    assert_eq!(describe(&c, "grow").expect("grow")["capacity"].as_i64(), Some(r.capacity_bytes));
    assert!(v.capacity_bytes < r.capacity_bytes);
    refused(&d, "ControllerExpandVolume", expand(&d, "grow", None, &tok), Code::InvalidArgument);
    refused(&d, "ControllerExpandVolume", expand(&d, "", range(MIB, 0), &tok), Code::InvalidArgument);
    refused(&d, "ControllerExpandVolume", expand(&d, "nope", range(64 * MIB, 0), &tok), Code::NotFound);
    refused(&d, "ControllerExpandVolume", expand(&d, "grow", range(64 * MIB, 32 * MIB), &tok), Code::OutOfRange);

    // ValidateVolumeCapabilities.
    let validate = |id: &str, caps: Vec<pb::VolumeCapability>| {
        d.block_on(d.controller().validate_volume_capabilities(pb::ValidateVolumeCapabilitiesRequest {
            volume_id: id.into(),
            volume_capabilities: caps,
            secrets: secrets(&tok),
            ..Default::default()
        }))
    };
    let r = validate("nope", vec![mount_cap(Mode::MultiNodeMultiWriter)]);
    refused(&d, "ValidateVolumeCapabilities", r, Code::NotFound);
    let r = validate("grow", vec![]);
    refused(&d, "ValidateVolumeCapabilities", r, Code::InvalidArgument);
    let r = validate("", vec![mount_cap(Mode::MultiNodeMultiWriter)]);
    refused(&d, "ValidateVolumeCapabilities", r, Code::InvalidArgument);
    let want = vec![mount_cap(Mode::MultiNodeMultiWriter), mount_cap(Mode::SingleNodeWriter)];
    let r = ok("Validate RWX", validate("grow", want.clone()));
    let conf = r.confirmed.expect("supported capabilities are confirmed");
    assert_eq!(conf.volume_capabilities, want);
    // A read-only-many volume does not serve writers on many nodes.
    create_ok(&d, "rox", 8 * MIB, Mode::MultiNodeReaderOnly, &tok);
    assert_eq!(describe(&c, "rox").expect("rox")["access_mode"], "ReadOnlyMany");
    let r = ok("Validate ROX", validate("rox", vec![mount_cap(Mode::MultiNodeReaderOnly)]));
    assert!(r.confirmed.is_some(), "{r:?}");
    let r = ok("Validate RWX on ROX", validate("rox", vec![mount_cap(Mode::MultiNodeMultiWriter)]));
    assert!(r.confirmed.is_none(), "{r:?}");
    assert!(!r.message.is_empty(), "an unconfirmed validation says why");
    let r = ok("Validate block", validate("grow", vec![block_cap(Mode::MultiNodeMultiWriter)]));
    assert!(r.confirmed.is_none() && !r.message.is_empty(), "{r:?}");
    // A single-node volume does not serve many nodes.
    create_ok(&d, "rwo", 8 * MIB, Mode::SingleNodeWriter, &tok);
    let r = ok("Validate RWX on RWO", validate("rwo", vec![mount_cap(Mode::MultiNodeMultiWriter)]));
    assert!(r.confirmed.is_none(), "{r:?}");
    // ControllerExpandVolume with a capability the volume does not serve.
    let req = pb::ControllerExpandVolumeRequest {
        volume_id: "rox".into(),
        capacity_range: range(16 * MIB, 0),
        secrets: secrets(&tok),
        volume_capability: Some(mount_cap(Mode::MultiNodeMultiWriter)),
    };
    let r = d.block_on(d.controller().controller_expand_volume(req));
    refused(&d, "ControllerExpandVolume", r, Code::InvalidArgument);
}

fn modify(
    d: &CsiDriver,
    id: &str,
    params: &[(&str, &str)],
    token: &str,
) -> Result<Response<pb::ControllerModifyVolumeResponse>, Status> {
    let req = pb::ControllerModifyVolumeRequest {
        volume_id: id.into(),
        secrets: if token.is_empty() { HashMap::new() } else { secrets(token) },
        mutable_parameters: params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    };
    d.block_on(d.controller().controller_modify_volume(req))
}

/// The volume's own QoS limits as `strata volume describe` shows them (None: the class's).
fn qos_of(c: &Cluster, name: &str) -> Option<(u64, u64)> {
    let v = describe(c, name).expect("volume");
    v.get("qos").map(|q| (q["bytes_per_sec"].as_u64().expect("bytes"), q["ops_per_sec"].as_u64().expect("ops")))
}

/// ControllerModifyVolume (a VolumeAttributesClass's `strata.io/max-bandwidth` and
/// `strata.io/max-iops`): the volume gets the limits, one not given keeps its value, refusals
/// for bad input, unknown volumes, missing and foreign tokens; CreateVolume and
/// ValidateVolumeCapabilities take the same mutable parameters.
#[test]
fn modify_volume() {
    let c = Cluster::new("csi-modify");
    c.cli(&["scope", "create", "ml"]);
    c.cli(&["scope", "create", "ml/nlp"]);
    let (viewer_tf, _) = c.issue_token_in("viewer", "viewer", "cluster");
    let (nlp_tf, _) = c.issue_token_in("nlp", "editor", "ml/nlp");
    let read = |f: &Path| std::fs::read_to_string(f).expect("token").trim().to_string();
    let (viewer, nlp) = (read(&viewer_tf), read(&nlp_tf));
    let d = CsiDriver::start(&c, "all", "node-a");
    let tok = c.token();
    create_ok(&d, "m", 8 * MIB, Mode::MultiNodeMultiWriter, &tok);
    assert_eq!(qos_of(&c, "m"), None);

    let bw = "strata.io/max-bandwidth";
    let iops = "strata.io/max-iops";
    ok("ControllerModifyVolume", modify(&d, "m", &[(bw, "100M"), (iops, "500")], &tok));
    assert_eq!(qos_of(&c, "m"), Some((100 << 20, 500)));
    // Idempotent, and a parameter not given keeps the volume's value.
    ok("ControllerModifyVolume again", modify(&d, "m", &[(bw, "100M"), (iops, "500")], &tok));
    ok("ControllerModifyVolume bandwidth", modify(&d, "m", &[(bw, "1048576")], &tok));
    assert_eq!(qos_of(&c, "m"), Some((1 << 20, 500)));
    ok("ControllerModifyVolume nothing", modify(&d, "m", &[], &tok));
    assert_eq!(qos_of(&c, "m"), Some((1 << 20, 500)));

    // Refusals, each leaving the volume as it was.
    refused(&d, "ControllerModifyVolume", modify(&d, "", &[(bw, "1M")], &tok), Code::InvalidArgument);
    refused(
        &d,
        "ControllerModifyVolume",
        modify(&d, "m", &[("strata.io/colour", "blue")], &tok),
        Code::InvalidArgument,
    );
    refused(&d, "ControllerModifyVolume", modify(&d, "m", &[(bw, "fast")], &tok), Code::InvalidArgument);
    refused(&d, "ControllerModifyVolume", modify(&d, "m", &[(iops, "-1")], &tok), Code::InvalidArgument);
    refused(&d, "ControllerModifyVolume", modify(&d, "nope", &[(bw, "1M")], &tok), Code::NotFound);
    refused(&d, "ControllerModifyVolume", modify(&d, "m", &[(bw, "1M")], ""), Code::Unauthenticated);
    refused(&d, "ControllerModifyVolume", modify(&d, "m", &[(bw, "2M")], "not-a-token"), Code::Unauthenticated);
    refused(&d, "ControllerModifyVolume", modify(&d, "m", &[(bw, "2M")], &viewer), Code::PermissionDenied);
    // Another scope's token does not reach it (the driver's own token sees it: PERMISSION_DENIED).
    let e = modify(&d, "m", &[(bw, "2M")], &nlp).expect_err("another scope's token");
    assert!(matches!(e.code(), Code::PermissionDenied | Code::NotFound), "{e:?}");
    d.allow_refusal("ControllerModifyVolume", &format!("{:?}", e.code()));
    assert_eq!(qos_of(&c, "m"), Some((1 << 20, 500)));

    // CreateVolume with mutable parameters: the new volume has the limits; an unknown one is
    // refused before anything is created.
    let mut req = create_req("made", 8 * MIB, Mode::MultiNodeMultiWriter, &tok);
    req.mutable_parameters.insert(bw.into(), "1G".into());
    let v = ok("CreateVolume with mutable_parameters", create(&d, req.clone())).volume.expect("volume");
    assert_eq!(v.volume_id, "made");
    assert_eq!(qos_of(&c, "made"), Some((1 << 30, 0)));
    ok("CreateVolume again", create(&d, req));
    let mut bad = create_req("bad", 8 * MIB, Mode::MultiNodeMultiWriter, &tok);
    bad.mutable_parameters.insert("strata.io/colour".into(), "blue".into());
    refused(&d, "CreateVolume", create(&d, bad), Code::InvalidArgument);
    assert!(describe(&c, "bad").is_none());

    // ValidateVolumeCapabilities confirms them.
    let caps = vec![mount_cap(Mode::MultiNodeMultiWriter)];
    let mutable: HashMap<String, String> = [(iops.to_string(), "10".to_string())].into();
    let r = ok(
        "ValidateVolumeCapabilities",
        d.block_on(d.controller().validate_volume_capabilities(pb::ValidateVolumeCapabilitiesRequest {
            volume_id: "made".into(),
            volume_capabilities: caps.clone(),
            mutable_parameters: mutable.clone(),
            secrets: secrets(&tok),
            ..Default::default()
        })),
    );
    assert_eq!(r.confirmed.expect("confirmed").mutable_parameters, mutable);
    let r = d.block_on(d.controller().validate_volume_capabilities(pb::ValidateVolumeCapabilitiesRequest {
        volume_id: "made".into(),
        volume_capabilities: caps,
        mutable_parameters: [("strata.io/colour".to_string(), "blue".to_string())].into(),
        secrets: secrets(&tok),
        ..Default::default()
    }));
    refused(&d, "ValidateVolumeCapabilities", r, Code::InvalidArgument);

    // Cleared over the CLI: the class's apply again.
    c.cli(&["volume", "qos", "m", "--clear"]);
    assert_eq!(qos_of(&c, "m"), None);
}

/// ListVolumes: pages, volumes created and deleted between pages, bad tokens; GetCapacity with
/// a quota and a maximum volume size.
#[test]
fn list_volumes_and_capacity() {
    let c = Cluster::new("csi-list");
    let d = CsiDriver::start(&c, "all", "node-a");
    let tok = c.token();
    for n in ["lv-b", "lv-d", "lv-f", "lv-h", "lv-j"] {
        create_ok(&d, n, 4 * MIB, Mode::MultiNodeMultiWriter, &tok);
    }
    let all_ids = ids(&ok("ListVolumes", list(&d, 0, "")));
    for n in ["lv-b", "lv-d", "lv-f", "lv-h", "lv-j", c.volume.as_str()] {
        assert!(all_ids.iter().any(|i| i == n), "{n} in {all_ids:?}");
    }
    let all = ok("ListVolumes", list(&d, 0, ""));
    assert!(all.next_token.is_empty());
    let e = all.entries.iter().find(|e| e.volume.as_ref().is_some_and(|v| v.volume_id == "lv-b")).expect("lv-b");
    assert!(e.volume.as_ref().expect("volume").capacity_bytes >= 4 * MIB);

    // Pages of 2, with changes between pages.
    let mut seen: Vec<String> = Vec::new();
    let mut token = String::new();
    let mut page = 0;
    loop {
        let r = ok("ListVolumes page", list(&d, 2, &token));
        assert!(r.entries.len() <= 2, "{r:?}");
        seen.extend(ids(&r));
        page += 1;
        match page {
            // Volumes come and go: before and after the position, and the last one returned.
            1 => {
                create_ok(&d, "lv-a", 4 * MIB, Mode::MultiNodeMultiWriter, &tok);
                create_ok(&d, "lv-z", 4 * MIB, Mode::MultiNodeMultiWriter, &tok);
                ok("delete", delete(&d, seen.last().expect("a page"), Some(&tok)));
            }
            2 => {
                ok("delete", delete(&d, "lv-j", Some(&tok)));
                create_ok(&d, "lv-g", 4 * MIB, Mode::MultiNodeMultiWriter, &tok);
            }
            _ => {}
        }
        if r.next_token.is_empty() {
            break;
        }
        token = r.next_token;
        assert!(page < 20, "pagination does not end");
    }
    let mut dedup = seen.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), seen.len(), "no volume twice: {seen:?}");
    for n in ["lv-d", "lv-f", "lv-h", c.volume.as_str()] {
        assert!(seen.iter().any(|s| s == n), "{n}, there all along, was listed: {seen:?}");
    }
    assert!(seen.len() >= 3, "{seen:?}");
    // Tokens the driver never gave.
    refused(&d, "ListVolumes", list(&d, 2, "not a token/..."), Code::Aborted);
    // What other conformance tools send: a plain word, and a number past the end.
    refused(&d, "ListVolumes", list(&d, 2, "invalid-token"), Code::Aborted);
    refused(&d, "ListVolumes", list(&d, 2, "12"), Code::Aborted);
    refused(&d, "ListVolumes", list(&d, -1, ""), Code::InvalidArgument);

    // GetCapacity: no quota anywhere.
    let cap = |params: &[(&str, &str)]| {
        d.block_on(d.controller().get_capacity(pb::GetCapacityRequest {
            volume_capabilities: vec![mount_cap(Mode::MultiNodeMultiWriter)],
            parameters: params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            accessible_topology: None,
        }))
    };
    let r = ok("GetCapacity", cap(&[]));
    assert!(r.available_capacity > 0, "{r:?}");
    // A quota on a department, a volume in one of its projects: what is left.
    c.cli(&["scope", "create", "ml"]);
    c.cli(&["scope", "create", "ml/vision"]);
    c.cli(&["policy", "set", "ml", "--quota", "100M", "--max-volume-size", "64M"]);
    let mut inml = create_req("in-ml", 30 * MIB, Mode::MultiNodeMultiWriter, &tok);
    inml.parameters.insert("strata.io/scope".into(), "ml/vision".into());
    let v = ok("CreateVolume in ml/vision", create(&d, inml)).volume.expect("volume");
    assert_eq!(describe(&c, "in-ml").expect("in-ml")["scope"], "ml/vision");
    assert_eq!(v.volume_context.get("strata.io/scope").map(String::as_str), Some("ml/vision"));
    for scope in ["ml", "ml/vision"] {
        let r = ok("GetCapacity ml", cap(&[("strata.io/scope", scope)]));
        assert_eq!(r.available_capacity, 100 * MIB - v.capacity_bytes, "{scope}: {r:?}");
        assert_eq!(r.maximum_volume_size, Some(64 * MIB), "{scope}: {r:?}");
    }
    // A templated scope and the class parameter are understood.
    let r =
        ok("GetCapacity templated", cap(&[("strata.io/scope", "ml/${pvc.namespace}"), ("strata.io/class", "default")]));
    assert!(r.available_capacity > 0);
    let r = cap(&[("strata.io/class", "no-such-class")]);
    let e = refused(&d, "GetCapacity", r, Code::InvalidArgument);
    assert!(e.message().contains("no-such-class"), "{e:?}");
    let r = cap(&[("strata.io/colour", "blue")]);
    refused(&d, "GetCapacity", r, Code::InvalidArgument);
}

// ---- Node ----

struct NodeVol {
    id: String,
    ctx: HashMap<String, String>,
    cap: pb::VolumeCapability,
}

fn stage_req(v: &NodeVol, staging: &Path, token: &str) -> pb::NodeStageVolumeRequest {
    pb::NodeStageVolumeRequest {
        volume_id: v.id.clone(),
        staging_target_path: staging.display().to_string(),
        volume_capability: Some(v.cap.clone()),
        secrets: secrets(token),
        volume_context: v.ctx.clone(),
        publish_context: HashMap::new(),
    }
}

fn publish_req(v: &NodeVol, staging: &Path, target: &Path, readonly: bool) -> pb::NodePublishVolumeRequest {
    pb::NodePublishVolumeRequest {
        volume_id: v.id.clone(),
        staging_target_path: staging.display().to_string(),
        target_path: target.display().to_string(),
        volume_capability: Some(v.cap.clone()),
        readonly,
        volume_context: v.ctx.clone(),
        ..Default::default()
    }
}

fn unpublish_req(id: &str, target: &Path) -> pb::NodeUnpublishVolumeRequest {
    pb::NodeUnpublishVolumeRequest { volume_id: id.into(), target_path: target.display().to_string() }
}

fn unstage_req(id: &str, staging: &Path) -> pb::NodeUnstageVolumeRequest {
    pb::NodeUnstageVolumeRequest { volume_id: id.into(), staging_target_path: staging.display().to_string() }
}

fn stats_req(id: &str, path: &Path) -> pb::NodeGetVolumeStatsRequest {
    pb::NodeGetVolumeStatsRequest {
        volume_id: id.into(),
        volume_path: path.display().to_string(),
        staging_target_path: String::new(),
    }
}

/// The node's life cycle of a volume: stage, publish (read-write and read-only), statistics,
/// expansion, unpublish and unstage, each idempotent, and their refusals.
#[test]
fn node_lifecycle() {
    let c = Cluster::new("csi-node");
    let d = CsiDriver::start(&c, "all", "node-a");
    let tok = c.token();
    let mk = |name: &str, mode: Mode| {
        let v = create_ok(&d, name, 16 * MIB, mode, &tok);
        NodeVol { id: v.volume_id, ctx: v.volume_context, cap: mount_cap(mode) }
    };
    let v = mk("nv", Mode::MultiNodeMultiWriter);
    let other = mk("nv-other", Mode::MultiNodeMultiWriter);
    let k = c.dir.join("kubelet");
    let staging = k.join("staging/nv");
    let target = k.join("pods/p1/nv");
    let target_ro = k.join("pods/p2/nv");
    std::fs::create_dir_all(&staging).expect("staging dir");
    std::fs::create_dir_all(target.parent().expect("parent")).expect("pod dir");
    std::fs::create_dir_all(target_ro.parent().expect("parent")).expect("pod dir");
    let mut node = d.node();

    // Missing fields.
    for (what, mut req) in [
        ("volume_id", stage_req(&v, &staging, &tok)),
        ("staging_target_path", stage_req(&v, &staging, &tok)),
        ("volume_capability", stage_req(&v, &staging, &tok)),
    ] {
        match what {
            "volume_id" => req.volume_id.clear(),
            "staging_target_path" => req.staging_target_path.clear(),
            _ => req.volume_capability = None,
        }
        let r = d.block_on(node.node_stage_volume(req));
        let e = refused(&d, "NodeStageVolume", r, Code::InvalidArgument);
        assert!(e.message().contains(what), "{what}: {e:?}");
    }
    let mut blk = stage_req(&v, &staging, &tok);
    blk.volume_capability = Some(block_cap(Mode::MultiNodeMultiWriter));
    let r = d.block_on(node.node_stage_volume(blk));
    refused(&d, "NodeStageVolume", r, Code::InvalidArgument);
    for what in ["volume_id", "target_path", "staging_target_path", "volume_capability"] {
        let mut req = publish_req(&v, &staging, &target, false);
        match what {
            "volume_id" => req.volume_id.clear(),
            "target_path" => req.target_path.clear(),
            "staging_target_path" => req.staging_target_path.clear(),
            _ => req.volume_capability = None,
        }
        let r = d.block_on(node.node_publish_volume(req));
        let e = refused(&d, "NodePublishVolume", r, Code::InvalidArgument);
        assert!(e.message().contains(what), "{what}: {e:?}");
    }
    for (what, req) in [("volume_id", unpublish_req("", &target)), ("target_path", unpublish_req("nv", Path::new("")))]
    {
        let r = d.block_on(node.node_unpublish_volume(req));
        let e = refused(&d, "NodeUnpublishVolume", r, Code::InvalidArgument);
        assert!(e.message().contains(what), "{what}: {e:?}");
    }
    for (what, req) in
        [("volume_id", unstage_req("", &staging)), ("staging_target_path", unstage_req("nv", Path::new("")))]
    {
        let r = d.block_on(node.node_unstage_volume(req));
        let e = refused(&d, "NodeUnstageVolume", r, Code::InvalidArgument);
        assert!(e.message().contains(what), "{what}: {e:?}");
    }
    // Publish before stage.
    let r = d.block_on(node.node_publish_volume(publish_req(&v, &staging, &target, false)));
    refused(&d, "NodePublishVolume", r, Code::FailedPrecondition);
    assert!(!mounted_at(&target));
    // Stage without a token.
    let mut no_tok = stage_req(&v, &staging, &tok);
    no_tok.secrets.clear();
    let r = d.block_on(node.node_stage_volume(no_tok));
    refused(&d, "NodeStageVolume", r, Code::Unauthenticated);
    assert!(!mounted_at(&staging));

    // Stage, twice.
    ok("NodeStageVolume", d.block_on(node.node_stage_volume(stage_req(&v, &staging, &tok))));
    assert!(is_fuse_mount(&staging), "staged: a FUSE mount at the staging path");
    ok("NodeStageVolume again", d.block_on(node.node_stage_volume(stage_req(&v, &staging, &tok))));
    // The same path for another volume.
    let r = d.block_on(node.node_stage_volume(stage_req(&other, &staging, &tok)));
    refused(&d, "NodeStageVolume", r, Code::AlreadyExists);

    // Publish read-write, twice; the data is the volume's.
    ok("NodePublishVolume", d.block_on(node.node_publish_volume(publish_req(&v, &staging, &target, false))));
    ok("NodePublishVolume again", d.block_on(node.node_publish_volume(publish_req(&v, &staging, &target, false))));
    std::fs::write(target.join("hello"), b"from the pod").expect("write in the target");
    assert_eq!(std::fs::read(staging.join("hello")).expect("read"), b"from the pod");
    // The same target read-only now: a different publish of a published path.
    let r = d.block_on(node.node_publish_volume(publish_req(&v, &staging, &target, true)));
    refused(&d, "NodePublishVolume", r, Code::AlreadyExists);
    // Publish read-only elsewhere: writes fail with EROFS, reads work.
    ok("NodePublishVolume ro", d.block_on(node.node_publish_volume(publish_req(&v, &staging, &target_ro, true))));
    assert_eq!(std::fs::read(target_ro.join("hello")).expect("read ro"), b"from the pod");
    let e = std::fs::write(target_ro.join("nope"), b"x").expect_err("write in a read-only target");
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    let e = std::fs::OpenOptions::new().append(true).open(target_ro.join("hello")).expect_err("open for writing");
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    // A read-only capability (flag) publishes read-only too.
    let target_flag = k.join("pods/p3/nv");
    let mut flag = publish_req(&v, &staging, &target_flag, false);
    flag.volume_capability = Some(mount_cap_flags(Mode::MultiNodeMultiWriter, &["ro"]));
    ok("NodePublishVolume flag ro", d.block_on(node.node_publish_volume(flag)));
    let e = std::fs::write(target_flag.join("nope"), b"x").expect_err("write in a ro-flag target");
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");

    // Statistics: bytes (the quota) and inodes.
    {
        let mut f = std::fs::File::create(target.join("data")).expect("create");
        f.write_all(&vec![7u8; 3 << 20]).expect("write");
        f.sync_all().expect("fsync");
    }
    for path in [&target, &staging] {
        let st = ok("NodeGetVolumeStats", d.block_on(node.node_get_volume_stats(stats_req("nv", path))));
        let bytes = st.usage.iter().find(|u| u.unit == pb::volume_usage::Unit::Bytes as i32).expect("bytes");
        let inodes = st.usage.iter().find(|u| u.unit == pb::volume_usage::Unit::Inodes as i32).expect("inodes");
        assert_eq!(bytes.total, 16 * MIB, "total bytes are the quota: {st:?}");
        assert!(bytes.used >= 3 * MIB && bytes.used <= bytes.total, "{st:?}");
        assert!(bytes.available <= bytes.total - bytes.used, "{st:?}");
        assert!(inodes.used >= 2 && inodes.total >= inodes.used, "{st:?}");
        let cond = st.volume_condition.expect("VOLUME_CONDITION is advertised");
        assert!(!cond.abnormal, "{cond:?}");
    }
    let r = d.block_on(node.node_get_volume_stats(stats_req("nv", &k.join("no/such/path"))));
    refused(&d, "NodeGetVolumeStats", r, Code::NotFound);
    let r = d.block_on(node.node_get_volume_stats(stats_req("nv", &k)));
    refused(&d, "NodeGetVolumeStats", r, Code::NotFound);
    let r = d.block_on(node.node_get_volume_stats(stats_req("nv-other", &target)));
    refused(&d, "NodeGetVolumeStats", r, Code::NotFound);
    let r = d.block_on(node.node_get_volume_stats(stats_req("", &target)));
    refused(&d, "NodeGetVolumeStats", r, Code::InvalidArgument);
    let r = d.block_on(node.node_get_volume_stats(stats_req("nv", Path::new(""))));
    refused(&d, "NodeGetVolumeStats", r, Code::InvalidArgument);

    // Online expansion: the controller grows the quota, the node reports it.
    let grown = ok("ControllerExpandVolume", expand(&d, "nv", range(48 * MIB, 0), &tok));
    assert!(grown.capacity_bytes >= 48 * MIB);
    let ne = ok(
        "NodeExpandVolume",
        d.block_on(node.node_expand_volume(pb::NodeExpandVolumeRequest {
            volume_id: "nv".into(),
            volume_path: target.display().to_string(),
            capacity_range: range(48 * MIB, 0),
            staging_target_path: staging.display().to_string(),
            volume_capability: Some(v.cap.clone()),
            secrets: HashMap::new(),
        })),
    );
    assert_eq!(ne.capacity_bytes, grown.capacity_bytes, "{ne:?}");
    let st = statvfs(&target);
    assert_eq!(st.f_blocks as i64 * st.f_frsize as i64, grown.capacity_bytes, "df shows the new size");
    let r = d.block_on(node.node_expand_volume(pb::NodeExpandVolumeRequest {
        volume_id: "nv".into(),
        volume_path: k.join("no/such").display().to_string(),
        ..Default::default()
    }));
    refused(&d, "NodeExpandVolume", r, Code::NotFound);

    // A volume in use is not deleted.
    let r = delete(&d, "nv", Some(&tok));
    assert!(describe(&c, "nv").is_some(), "a staged volume was deleted ({r:?})");
    refused(&d, "DeleteVolume", r, Code::FailedPrecondition);

    // Unpublish: the target path goes; twice is fine, and so is a path never published.
    for t in [&target, &target_ro, &target_flag] {
        ok("NodeUnpublishVolume", d.block_on(node.node_unpublish_volume(unpublish_req("nv", t))));
        assert!(!mounted_at(t), "{} unmounted", t.display());
        assert!(!t.exists(), "{} removed", t.display());
        ok("NodeUnpublishVolume again", d.block_on(node.node_unpublish_volume(unpublish_req("nv", t))));
    }
    ok(
        "NodeUnpublishVolume never",
        d.block_on(node.node_unpublish_volume(unpublish_req("nv", &k.join("pods/never/nv")))),
    );
    let empty = k.join("pods/empty/nv");
    std::fs::create_dir_all(&empty).expect("dir");
    ok("NodeUnpublishVolume an unmounted dir", d.block_on(node.node_unpublish_volume(unpublish_req("nv", &empty))));
    assert!(is_fuse_mount(&staging), "still staged");
    assert_eq!(std::fs::read(staging.join("hello")).expect("read"), b"from the pod");

    // Unstage, twice; the staging directory the CO made stays, unmounted.
    ok("NodeUnstageVolume", d.block_on(node.node_unstage_volume(unstage_req("nv", &staging))));
    assert!(!mounted_at(&staging), "unstaged");
    ok("NodeUnstageVolume again", d.block_on(node.node_unstage_volume(unstage_req("nv", &staging))));
    ok("NodeUnstageVolume never", d.block_on(node.node_unstage_volume(unstage_req("nv", &k.join("staging/never")))));
    // Staged again (data kept), then published to a target whose parent the kubelet made.
    ok("NodeStageVolume after unstage", d.block_on(node.node_stage_volume(stage_req(&v, &staging, &tok))));
    assert_eq!(std::fs::read(staging.join("hello")).expect("read"), b"from the pod");
    ok("NodeUnstageVolume", d.block_on(node.node_unstage_volume(unstage_req("nv", &staging))));

    // ReadWriteOncePod: one target only.
    let once = mk("nv-once", Mode::SingleNodeSingleWriter);
    assert_eq!(once.ctx.get("strata.io/single-pod").map(String::as_str), Some("true"), "{:?}", once.ctx);
    let os = k.join("staging/once");
    let (t1, t2) = (k.join("pods/o1/v"), k.join("pods/o2/v"));
    ok("NodeStageVolume RWOP", d.block_on(node.node_stage_volume(stage_req(&once, &os, &tok))));
    ok("NodePublishVolume RWOP", d.block_on(node.node_publish_volume(publish_req(&once, &os, &t1, false))));
    ok("NodePublishVolume RWOP again", d.block_on(node.node_publish_volume(publish_req(&once, &os, &t1, false))));
    let r = d.block_on(node.node_publish_volume(publish_req(&once, &os, &t2, false)));
    refused(&d, "NodePublishVolume", r, Code::FailedPrecondition);
    assert!(!mounted_at(&t2));
    ok("NodeUnpublishVolume RWOP", d.block_on(node.node_unpublish_volume(unpublish_req("nv-once", &t1))));
    ok("NodePublishVolume RWOP elsewhere", d.block_on(node.node_publish_volume(publish_req(&once, &os, &t2, false))));
    ok("NodeUnpublishVolume RWOP", d.block_on(node.node_unpublish_volume(unpublish_req("nv-once", &t2))));
    ok("NodeUnstageVolume RWOP", d.block_on(node.node_unstage_volume(unstage_req("nv-once", &os))));
    assert!(!mounted_at(&os));

    // A volume that does not exist cannot be staged.
    let ghost =
        NodeVol { id: "no-such-volume".into(), ctx: HashMap::new(), cap: mount_cap(Mode::MultiNodeMultiWriter) };
    let gs = k.join("staging/ghost");
    let r = d.block_on(node.node_stage_volume(stage_req(&ghost, &gs, &tok)));
    refused(&d, "NodeStageVolume", r, Code::NotFound);
    assert!(!mounted_at(&gs));
}

// ---- Policies and tokens through Kubernetes ----

/// Provisioning with the tokens of scopes: policies refuse with the rule and the scope named,
/// revoked and missing tokens are unauthenticated, and one scope's token cannot touch another
/// scope's volumes.
#[test]
fn policies_and_tokens() {
    let c = Cluster::new("csi-policy");
    c.cli(&["storageclass", "create", "fast"]);
    for s in ["ml", "ml/vision", "ml/nlp"] {
        c.cli(&["scope", "create", s]);
    }
    c.cli(&["policy", "set", "ml", "--allowed-classes", "default", "--max-volume-size", "64M"]);
    let (vision_tf, _) = c.issue_token_in("vision", "editor", "ml/vision");
    let (nlp_tf, nlp_id) = c.issue_token_in("nlp", "editor", "ml/nlp");
    let read = |f: &Path| std::fs::read_to_string(f).expect("token").trim().to_string();
    let (vision, nlp) = (read(&vision_tf), read(&nlp_tf));
    let d = CsiDriver::start(&c, "all", "node-a");

    // Within the policy: created in the token's scope.
    let v = create_ok(&d, "vis-data", 32 * MIB, Mode::MultiNodeMultiWriter, &vision);
    assert_eq!(describe(&c, "vis-data").expect("vis-data")["scope"], "ml/vision");
    assert_eq!(v.volume_context.get("strata.io/scope").map(String::as_str), Some("ml/vision"));
    // A class the policy does not allow.
    let mut fast = create_req("vis-fast", 8 * MIB, Mode::MultiNodeMultiWriter, &vision);
    fast.parameters.insert("strata.io/class".into(), "fast".into());
    let e = refused(&d, "CreateVolume", create(&d, fast), Code::PermissionDenied);
    assert!(e.message().contains("fast") && e.message().contains("ml"), "names class and scope: {e:?}");
    assert!(e.message().contains("allowed"), "names the rule: {e:?}");
    // Bigger than the policy's maximum.
    let e = refused(
        &d,
        "CreateVolume",
        create(&d, create_req("vis-big", 128 * MIB, Mode::MultiNodeMultiWriter, &vision)),
        Code::PermissionDenied,
    );
    assert!(e.message().contains("ml") && e.message().contains("max"), "names rule and scope: {e:?}");
    assert!(describe(&c, "vis-big").is_none() && describe(&c, "vis-fast").is_none());
    // Expanding past the maximum is refused the same way, and leaves the volume as it was.
    let e = refused(
        &d,
        "ControllerExpandVolume",
        expand(&d, "vis-data", range(128 * MIB, 0), &vision),
        Code::PermissionDenied,
    );
    assert!(e.message().contains("ml"), "{e:?}");
    assert_eq!(describe(&c, "vis-data").expect("vis-data")["capacity"].as_i64(), Some(v.capacity_bytes));
    // A scope the token does not reach.
    let mut elsewhere = create_req("vis-else", 8 * MIB, Mode::MultiNodeMultiWriter, &vision);
    elsewhere.parameters.insert("strata.io/scope".into(), "ml/nlp".into());
    let e = create(&d, elsewhere).expect_err("scope out of reach");
    assert!(matches!(e.code(), Code::PermissionDenied | Code::NotFound), "{e:?}");
    d.allow_refusal("CreateVolume", &format!("{:?}", e.code()));
    assert!(describe(&c, "vis-else").is_none());

    // One scope's token cannot delete or expand another's volume.
    let n = create_ok(&d, "nlp-data", 16 * MIB, Mode::MultiNodeMultiWriter, &nlp);
    let r = expand(&d, "nlp-data", range(32 * MIB, 0), &vision);
    let e = r.expect_err("expanding another scope's volume");
    assert!(matches!(e.code(), Code::PermissionDenied | Code::NotFound), "{e:?}");
    d.allow_refusal("ControllerExpandVolume", &format!("{:?}", e.code()));
    assert_eq!(describe(&c, "nlp-data").expect("nlp-data")["capacity"].as_i64(), Some(n.capacity_bytes));
    let r = delete(&d, "nlp-data", Some(&vision));
    assert!(describe(&c, "nlp-data").is_some(), "another scope's token deleted the volume ({r:?})");
    let e = r.expect_err("DeleteVolume of another scope's volume must not report success while it exists");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    d.allow_refusal("DeleteVolume", "PermissionDenied");

    // No token; a revoked token.
    let mut none = create_req("nlp-2", 8 * MIB, Mode::MultiNodeMultiWriter, &nlp);
    none.secrets.clear();
    refused(&d, "CreateVolume", create(&d, none), Code::Unauthenticated);
    refused(&d, "ControllerExpandVolume", expand(&d, "nlp-data", range(32 * MIB, 0), ""), Code::Unauthenticated);
    c.cli(&["token", "revoke", &nlp_id]);
    let r = create(&d, create_req("nlp-2", 8 * MIB, Mode::MultiNodeMultiWriter, &nlp));
    refused(&d, "CreateVolume", r, Code::Unauthenticated);
    refused(&d, "ControllerExpandVolume", expand(&d, "nlp-data", range(32 * MIB, 0), &nlp), Code::Unauthenticated);
    refused(&d, "DeleteVolume", delete(&d, "nlp-data", Some(&nlp)), Code::Unauthenticated);
    let r = create(&d, create_req("nlp-3", 8 * MIB, Mode::MultiNodeMultiWriter, "not-a-token"));
    refused(&d, "CreateVolume", r, Code::Unauthenticated);
    assert!(describe(&c, "nlp-data").is_some());
    // The owner's scope (an admin above it) deletes it.
    ok("DeleteVolume", delete(&d, "nlp-data", Some(&c.token())));
    assert!(describe(&c, "nlp-data").is_none());
    ok("DeleteVolume own", delete(&d, "vis-data", Some(&vision)));
    assert!(describe(&c, "vis-data").is_none());
}

// ---- Snapshots and clones ----

fn snap(d: &CsiDriver, source: &str, name: &str, token: &str) -> Result<Response<pb::CreateSnapshotResponse>, Status> {
    d.block_on(d.controller().create_snapshot(pb::CreateSnapshotRequest {
        source_volume_id: source.into(),
        name: name.into(),
        secrets: secrets(token),
        parameters: HashMap::new(),
    }))
}

fn unsnap(d: &CsiDriver, id: &str, token: &str) -> Result<Response<pb::DeleteSnapshotResponse>, Status> {
    d.block_on(
        d.controller().delete_snapshot(pb::DeleteSnapshotRequest { snapshot_id: id.into(), secrets: secrets(token) }),
    )
}

fn list_snaps(d: &CsiDriver, req: pb::ListSnapshotsRequest) -> Result<Response<pb::ListSnapshotsResponse>, Status> {
    d.block_on(d.controller().list_snapshots(req))
}

fn snap_ids(r: &pb::ListSnapshotsResponse) -> Vec<String> {
    r.entries.iter().map(|e| e.snapshot.as_ref().expect("snapshot").snapshot_id.clone()).collect()
}

/// CreateSnapshot, DeleteSnapshot and ListSnapshots (idempotency, errors, filters, paging) and
/// CreateVolume from a snapshot or a volume (sources, capacity, idempotency) at the controller;
/// the clones' contents through real mounts are in `csi_kubelet`.
#[test]
fn snapshots_and_clones() {
    let mut c = Cluster::new("csi-snap");
    let tok = c.token();
    let d = CsiDriver::start(&c, "controller", "ctl");
    let src = create_ok(&d, "pvc-src", 64 * MIB, Mode::MultiNodeMultiWriter, &tok);
    let other = create_ok(&d, "pvc-other", 64 * MIB, Mode::MultiNodeMultiWriter, &tok);

    // Create: ready at once, idempotent by name; a CSI name Strata refuses maps to a digest.
    let s1 = ok("CreateSnapshot", snap(&d, &src.volume_id, "snapshot-1", &tok)).snapshot.expect("snapshot");
    assert_eq!(s1.snapshot_id, "pvc-src@snapshot-1");
    assert_eq!(s1.source_volume_id, "pvc-src");
    assert!(s1.ready_to_use && s1.creation_time.is_some_and(|t| t.seconds > 1_600_000_000), "{s1:?}");
    let again = ok("CreateSnapshot", snap(&d, &src.volume_id, "snapshot-1", &tok)).snapshot.expect("snapshot");
    assert_eq!(again, s1, "a retry answers the same snapshot");
    let odd = ok("CreateSnapshot", snap(&d, &src.volume_id, "my snap/1", &tok)).snapshot.expect("snapshot");
    assert!(odd.snapshot_id.starts_with("pvc-src@csi-"), "{odd:?}");
    // The same name on another source; no name; no source; a source that does not exist.
    refused(&d, "CreateSnapshot", snap(&d, &other.volume_id, "snapshot-1", &tok), Code::AlreadyExists);
    refused(&d, "CreateSnapshot", snap(&d, &src.volume_id, "", &tok), Code::InvalidArgument);
    refused(&d, "CreateSnapshot", snap(&d, "", "snapshot-2", &tok), Code::InvalidArgument);
    refused(&d, "CreateSnapshot", snap(&d, "no-such-volume", "snapshot-2", &tok), Code::NotFound);
    refused(&d, "CreateSnapshot", snap(&d, &s1.snapshot_id, "snapshot-2", &tok), Code::InvalidArgument);
    let mut bad_param = pb::CreateSnapshotRequest {
        source_volume_id: src.volume_id.clone(),
        name: "snapshot-3".into(),
        secrets: secrets(&tok),
        ..Default::default()
    };
    bad_param.parameters.insert("strata.io/colour".into(), "blue".into());
    refused(&d, "CreateSnapshot", d.block_on(d.controller().create_snapshot(bad_param)), Code::InvalidArgument);
    let mut no_token =
        pb::CreateSnapshotRequest { source_volume_id: src.volume_id.clone(), name: "s".into(), ..Default::default() };
    no_token.secrets.clear();
    refused(&d, "CreateSnapshot", d.block_on(d.controller().create_snapshot(no_token)), Code::Unauthenticated);
    let s2 = ok("CreateSnapshot", snap(&d, &other.volume_id, "snapshot-2", &tok)).snapshot.expect("snapshot");

    // List: all, by id, by source, paged; ids this driver never gave find nothing.
    let all = ok("ListSnapshots", list_snaps(&d, pb::ListSnapshotsRequest::default()));
    let mut want = vec![s1.snapshot_id.clone(), odd.snapshot_id.clone(), s2.snapshot_id.clone()];
    want.sort();
    assert_eq!(snap_ids(&all), want);
    let by_id = |id: &str, src: &str| {
        let r = pb::ListSnapshotsRequest { snapshot_id: id.into(), source_volume_id: src.into(), ..Default::default() };
        snap_ids(&ok("ListSnapshots", list_snaps(&d, r)))
    };
    assert_eq!(by_id(&s1.snapshot_id, ""), vec![s1.snapshot_id.clone()]);
    assert_eq!(by_id(&s1.snapshot_id, &src.volume_id), vec![s1.snapshot_id.clone()]);
    assert!(by_id(&s1.snapshot_id, &other.volume_id).is_empty());
    assert!(by_id("pvc-src@nothing", "").is_empty() && by_id("garbage", "").is_empty());
    assert_eq!(by_id("", &other.volume_id), vec![s2.snapshot_id.clone()]);
    assert!(by_id("", "no-such-volume").is_empty());
    let mut token = String::new();
    let mut paged = Vec::new();
    loop {
        let r = pb::ListSnapshotsRequest { max_entries: 2, starting_token: token, ..Default::default() };
        let page = ok("ListSnapshots", list_snaps(&d, r));
        assert!(page.entries.len() <= 2);
        paged.extend(snap_ids(&page));
        if page.next_token.is_empty() {
            break;
        }
        token = page.next_token;
    }
    assert_eq!(paged, want);
    let bad = pb::ListSnapshotsRequest { starting_token: "pvc-src@snapshot-1".into(), ..Default::default() };
    refused(&d, "ListSnapshots", list_snaps(&d, bad), Code::Aborted);
    let neg = pb::ListSnapshotsRequest { max_entries: -1, ..Default::default() };
    refused(&d, "ListSnapshots", list_snaps(&d, neg), Code::InvalidArgument);

    // A volume from a snapshot and from a volume; the content source comes back.
    let mut from_snap = create_req("pvc-from-snap", 64 * MIB, Mode::MultiNodeMultiWriter, &tok);
    from_snap.volume_content_source = Some(snapshot_source(&s1.snapshot_id));
    let v = ok("CreateVolume", create(&d, from_snap.clone())).volume.expect("volume");
    assert_eq!(v.content_source, from_snap.volume_content_source);
    assert_eq!(v.capacity_bytes, 64 * MIB);
    let v2 = ok("CreateVolume", create(&d, from_snap)).volume.expect("volume");
    assert_eq!(v2, v, "a retry answers the same volume");
    let mut from_vol = create_req("pvc-from-vol", 64 * MIB, Mode::MultiNodeMultiWriter, &tok);
    from_vol.volume_content_source = Some(volume_source(&src.volume_id));
    let v = ok("CreateVolume", create(&d, from_vol.clone())).volume.expect("volume");
    assert_eq!(v.content_source, from_vol.volume_content_source);
    assert!(describe(&c, "pvc-from-vol").is_some() && describe(&c, "pvc-from-snap").is_some());
    // Sources that do not exist.
    let mut gone = create_req("pvc-x", 64 * MIB, Mode::MultiNodeMultiWriter, &tok);
    gone.volume_content_source = Some(snapshot_source("pvc-src@no-such-snapshot"));
    refused(&d, "CreateVolume", create(&d, gone.clone()), Code::NotFound);
    gone.volume_content_source = Some(snapshot_source("not-an-id"));
    refused(&d, "CreateVolume", create(&d, gone), Code::NotFound);
    assert!(describe(&c, "pvc-x").is_none());

    // A capacity smaller than what the source holds: OUT_OF_RANGE.
    let (tf, mnt) = (c.token_file.clone(), c.dir.join("src-mnt"));
    std::fs::create_dir_all(&mnt).expect("mount point");
    let m = c.mount_as(&src.volume_id, &tf, &mnt, &[]);
    write_synced(&c.p(m, "big"), &random_bytes(3, 3 << 20)).expect("write");
    let big = ok("CreateSnapshot", snap(&d, &src.volume_id, "snapshot-big", &tok)).snapshot.expect("snapshot");
    assert!(big.size_bytes >= 3 << 20, "size_bytes is what the snapshot holds: {big:?}");
    let mut small = create_req("pvc-small", MIB, Mode::MultiNodeMultiWriter, &tok);
    small.volume_content_source = Some(snapshot_source(&big.snapshot_id));
    refused(&d, "CreateVolume", create(&d, small), Code::OutOfRange);
    assert!(describe(&c, "pvc-small").is_none());

    // A volume with snapshots is not deleted: FAILED_PRECONDITION, in the server's words.
    let e = refused(&d, "DeleteVolume", delete(&d, &other.volume_id, Some(&tok)), Code::FailedPrecondition);
    assert!(e.message().contains("snapshot"), "{e:?}");
    assert!(describe(&c, &other.volume_id).is_some());

    // Delete: idempotent; then the volume goes.
    ok("DeleteSnapshot", unsnap(&d, &s2.snapshot_id, &tok));
    ok("DeleteSnapshot", unsnap(&d, &s2.snapshot_id, &tok));
    ok("DeleteSnapshot", unsnap(&d, "garbage", &tok));
    refused(&d, "DeleteSnapshot", unsnap(&d, "", &tok), Code::InvalidArgument);
    assert!(by_id(&s2.snapshot_id, "").is_empty());
    ok("DeleteVolume", delete(&d, &other.volume_id, Some(&tok)));
    for s in [&s1, &odd, &big] {
        ok("DeleteSnapshot", unsnap(&d, &s.snapshot_id, &tok));
    }
    assert!(snap_ids(&ok("ListSnapshots", list_snaps(&d, pb::ListSnapshotsRequest::default()))).is_empty());
}
