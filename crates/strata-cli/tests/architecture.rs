//! The architecture's "never" rules (ARCHITECTURE.md, "Architecture invariants"), checked on the
//! workspace's real dependency graph as `cargo metadata` resolves it: a new `use` that breaks a
//! layer fails here, not in review.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;

/// The Strata crates by layer: a crate may depend (normally, not for tests) only on crates of a
/// lower layer. Front-ends sit on the VFS; the VFS on the wire protocol and the block layer;
/// those on the plain types.
const LAYERS: &[(&str, u8)] = &[
    ("strata-types", 0),
    ("strata-nfs-wire", 0),
    ("strata-bench", 0),
    ("strata-metrics", 0),
    ("strata-meta", 1),
    ("strata-blocks", 1),
    ("strata-proto", 1),
    ("strata-vfs", 2),
    ("strata-server", 2),
    ("strata-fuse", 3),
    ("strata-nfs", 3),
    ("strata-s3", 3),
    ("strata-csi", 3),
    ("strata-cli", 4),
];

/// The front-ends: they reach volumes only through the VFS.
const FRONT_ENDS: &[&str] = &["strata-fuse", "strata-nfs", "strata-s3", "strata-csi"];

/// The only crates that may link the metadata engines: the server, and the binary that runs it.
const ENGINE_USERS: &[&str] = &["strata-meta", "strata-server", "strata-cli"];

/// The metadata engines' client libraries.
const ENGINES: &[&str] = &["rusqlite", "postgres", "libsqlite3-sys", "tokio-postgres"];

struct Graph {
    /// Package id → name.
    names: BTreeMap<String, String>,
    /// Package id → ids of its normal (non-dev, non-build) dependencies.
    normal: BTreeMap<String, Vec<String>>,
    /// Workspace package ids by name.
    members: BTreeMap<String, String>,
}

fn graph() -> Graph {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo metadata");
    assert!(out.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    let m: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata output");
    let mut names = BTreeMap::new();
    for p in m["packages"].as_array().expect("packages") {
        names.insert(p["id"].as_str().expect("id").to_string(), p["name"].as_str().expect("name").to_string());
    }
    let members: BTreeMap<String, String> = m["workspace_members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|id| {
            let id = id.as_str().expect("member id").to_string();
            (names[&id].clone(), id)
        })
        .collect();
    let mut normal = BTreeMap::new();
    for n in m["resolve"]["nodes"].as_array().expect("resolve nodes") {
        let deps = n["deps"]
            .as_array()
            .expect("deps")
            .iter()
            .filter(|d| d["dep_kinds"].as_array().is_some_and(|k| k.iter().any(|k| k["kind"].is_null())))
            .map(|d| d["pkg"].as_str().expect("pkg").to_string())
            .collect();
        normal.insert(n["id"].as_str().expect("node id").to_string(), deps);
    }
    Graph { names, normal, members }
}

impl Graph {
    /// Names of the direct normal dependencies of workspace crate `name`.
    fn direct(&self, name: &str) -> BTreeSet<String> {
        self.normal[&self.members[name]].iter().map(|id| self.names[id].clone()).collect()
    }

    /// Names of everything workspace crate `name` links, directly or not.
    fn closure(&self, name: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![self.members[name].clone()];
        while let Some(id) = todo.pop() {
            for d in &self.normal[&id] {
                if seen.insert(d.clone()) {
                    todo.push(d.clone());
                }
            }
        }
        seen.into_iter().map(|id| self.names[&id].clone()).collect()
    }
}

#[test]
fn every_strata_crate_has_a_layer() {
    let g = graph();
    let known: BTreeSet<&str> = LAYERS.iter().map(|(n, _)| *n).collect();
    let members: BTreeSet<&str> = g.members.keys().map(String::as_str).collect();
    assert_eq!(members, known, "a crate was added or removed: give it a layer here and in ARCHITECTURE.md");
}

#[test]
fn dependencies_point_down_the_layers_only() {
    let g = graph();
    let layer: BTreeMap<&str, u8> = LAYERS.iter().copied().collect();
    for (name, l) in LAYERS {
        for d in g.direct(name) {
            if let Some(dl) = layer.get(d.as_str()) {
                assert!(dl < l, "{name} (layer {l}) depends on {d} (layer {dl}): dependencies point down only");
            }
        }
    }
}

#[test]
fn front_ends_reach_volumes_only_through_the_vfs() {
    let g = graph();
    for fe in FRONT_ENDS {
        let strata: BTreeSet<String> = g.direct(fe).into_iter().filter(|d| d.starts_with("strata-")).collect();
        for d in &strata {
            assert!(
                // strata-metrics knows nothing of volumes or storage: it only counts.
                ["strata-vfs", "strata-types", "strata-nfs-wire", "strata-metrics"].contains(&d.as_str()),
                "front-end {fe} depends on {d} directly: it may use only strata-vfs, strata-types and strata-metrics"
            );
        }
    }
}

#[test]
fn only_the_server_links_the_metadata_engines() {
    let g = graph();
    for name in g.members.keys() {
        if ENGINE_USERS.contains(&name.as_str()) {
            continue;
        }
        let linked: Vec<String> = g.closure(name).into_iter().filter(|d| ENGINES.contains(&d.as_str())).collect();
        assert!(linked.is_empty(), "{name} links {linked:?}: only strata server may reach the metadata engines");
        assert!(!g.closure(name).contains("strata-meta"), "{name} links strata-meta");
    }
}

#[test]
fn the_plain_types_stand_alone() {
    let g = graph();
    let strata: Vec<String> = g.closure("strata-types").into_iter().filter(|d| d.starts_with("strata-")).collect();
    assert!(strata.is_empty(), "strata-types depends on {strata:?}");
}
