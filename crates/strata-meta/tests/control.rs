//! The control plane at the metadata layer: scopes, storage classes, policy inheritance and
//! provisioning, on a real SQLite file.

mod common;

use strata_meta::control::*;
use strata_meta::{Meta, MetaError, Timespec};

const GIB: u64 = 1 << 30;

/// A fresh store (SQLite, or PostgreSQL with `STRATA_TEST_PG_URL`) with the default class.
fn meta() -> (common::TestFs, ()) {
    let fs = common::TestFs::new();
    fs.meta.bootstrap_default_class().expect("default class");
    (fs, ())
}

fn class(name: &str) -> StorageClass {
    StorageClass { created: Timespec::default(), ..StorageClass::local(name) }
}

fn req(name: &str, scope: &str, class: Option<&str>, capacity: u64) -> VolumeRequest {
    VolumeRequest {
        name: name.into(),
        scope: scope.into(),
        class: class.map(String::from),
        capacity,
        default_store: "file:///tmp/strata-test-blocks".into(),
        ..Default::default()
    }
}

fn rule_of(e: MetaError) -> (String, String) {
    match e {
        MetaError::PolicyDenied { rule, scope, .. } => (rule, scope),
        other => panic!("expected a policy refusal, got {other:?}"),
    }
}

fn setup(m: &Meta) {
    m.create_class(&class("fast")).expect("fast");
    m.create_class(&class("cheap")).expect("cheap");
    m.create_scope("ml", "").expect("ml");
    m.create_scope("ml/vision", "").expect("vision");
    m.create_scope("ml/nlp", "").expect("nlp");
}

#[test]
fn scopes_nest_and_delete_only_when_empty() {
    let (fs, ()) = meta();
    let m = &fs.meta;
    assert_eq!(m.create_scope("ml/vision", ""), Err(MetaError::NoScope("ml".into())), "parent first");
    setup(m);
    assert_eq!(m.create_scope("ml", ""), Err(MetaError::Exists));
    assert!(matches!(m.create_scope("a/b/c", ""), Err(MetaError::Invalid(_))));
    assert!(matches!(m.create_scope("ml/../x", ""), Err(MetaError::Invalid(_))));
    assert!(matches!(m.delete_scope("ml"), Err(MetaError::Busy(_))), "has child scopes");
    m.provision_volume(&req("v1", "ml/nlp", None, 0)).expect("volume");
    assert!(matches!(m.delete_scope("ml/nlp"), Err(MetaError::Busy(_))), "has a volume");
    m.delete_scope("ml/vision").expect("empty project");
    assert_eq!(m.scope("ml/vision"), Err(MetaError::NoScope("ml/vision".into())));
}

#[test]
fn classes_have_one_default_and_are_kept_while_used() {
    let (fs, ()) = meta();
    let m = &fs.meta;
    let mut fast = class("fast");
    fast.is_default = true;
    m.create_class(&fast).expect("fast");
    let defaults: Vec<String> =
        m.list_classes().expect("list").into_iter().filter(|c| c.is_default).map(|c| c.name).collect();
    assert_eq!(defaults, vec!["fast".to_string()], "the new default took the mark");
    assert!(matches!(m.delete_class("fast"), Err(MetaError::Busy(_))), "the default cannot go");
    m.provision_volume(&req("v", "cluster", Some("default"), 0)).expect("volume");
    assert!(matches!(m.delete_class("default"), Err(MetaError::Busy(_))), "in use");
    let mut bad = class("bad");
    bad.block_size = 1000;
    assert!(matches!(m.create_class(&bad), Err(MetaError::Invalid(_))));
    assert_eq!(m.create_class(&class("fast")), Err(MetaError::ClassExists("fast".into())));
}

#[test]
fn allowed_classes_narrow_down_the_chain() {
    let (fs, ()) = meta();
    let m = &fs.meta;
    setup(m);
    m.set_policy("ml", &Policy { allowed_classes: Some(vec!["fast".into(), "cheap".into()]), ..Default::default() })
        .expect("ml");
    // A project cannot widen: "default" stays refused even if it lists it.
    m.set_policy(
        "ml/vision",
        &Policy { allowed_classes: Some(vec!["cheap".into(), "default".into()]), ..Default::default() },
    )
    .expect("vision");
    let e = m.effective_policy("ml/vision").expect("effective");
    assert_eq!(e.allowed_classes.as_ref().map(|s| s.value.clone()), Some(vec!["cheap".to_string()]));
    m.provision_volume(&req("a", "ml/vision", Some("cheap"), GIB)).expect("allowed");
    let (rule, _) = rule_of(m.provision_volume(&req("b", "ml/vision", Some("fast"), GIB)).expect_err("narrowed"));
    assert_eq!(rule, "allowed_classes");
    assert!(m.provision_volume(&req("c", "ml/vision", Some("default"), GIB)).is_err(), "no widening");
    m.provision_volume(&req("d", "ml/nlp", Some("fast"), GIB)).expect("sibling keeps the department's rule");
}

#[test]
fn the_topmost_enforced_class_wins_and_names_its_scope() {
    let (fs, ()) = meta();
    let m = &fs.meta;
    setup(m);
    m.set_policy("ml", &Policy { enforced_class: Some("cheap".into()), ..Default::default() }).expect("ml");
    m.set_policy("ml/vision", &Policy { enforced_class: Some("fast".into()), ..Default::default() }).expect("vision");
    let v = m.provision_volume(&req("a", "ml/vision", None, 0)).expect("no class asked");
    assert_eq!(v.class, "cheap");
    let e = m.provision_volume(&req("b", "ml/vision", Some("fast"), 0)).expect_err("other class");
    assert_eq!(rule_of(e), ("enforced_class".to_string(), "ml".to_string()));
}

#[test]
fn default_class_comes_from_the_nearest_scope() {
    let (fs, ()) = meta();
    let m = &fs.meta;
    setup(m);
    m.set_policy("ml", &Policy { default_class: Some("cheap".into()), ..Default::default() }).expect("ml");
    m.set_policy("ml/vision", &Policy { default_class: Some("fast".into()), ..Default::default() }).expect("vision");
    assert_eq!(m.provision_volume(&req("a", "ml/vision", None, 0)).expect("a").class, "fast");
    assert_eq!(m.provision_volume(&req("b", "ml/nlp", None, 0)).expect("b").class, "cheap");
    assert_eq!(m.provision_volume(&req("c", "cluster", None, 0)).expect("c").class, "default");
    let e = m.effective_policy("ml/vision").expect("effective");
    assert_eq!(e.default_class.map(|s| (s.value, s.from)), Some(("fast".to_string(), "ml/vision".to_string())));
}

#[test]
fn sizes_and_quotas_hold_at_every_level() {
    let (fs, ()) = meta();
    let m = &fs.meta;
    setup(m);
    m.set_policy("ml", &Policy { quota: Some(10 * GIB), max_volume_size: Some(8 * GIB), ..Default::default() })
        .expect("ml");
    m.set_policy("ml/vision", &Policy { quota: Some(6 * GIB), max_volume_size: Some(9 * GIB), ..Default::default() })
        .expect("vision");
    let e = m.effective_policy("ml/vision").expect("effective");
    assert_eq!(e.max_volume_size.map(|s| (s.value, s.from)), Some((8 * GIB, "ml".to_string())), "the smaller wins");
    assert_eq!(
        rule_of(m.provision_volume(&req("big", "ml/vision", None, 9 * GIB)).expect_err("max")).0,
        "max_volume_size"
    );
    assert_eq!(
        rule_of(m.provision_volume(&req("nosize", "ml/vision", None, 0)).expect_err("size needed")).0,
        "max_volume_size"
    );
    m.provision_volume(&req("a", "ml/vision", None, 4 * GIB)).expect("a");
    let e = m.provision_volume(&req("b", "ml/vision", None, 3 * GIB)).expect_err("project quota");
    assert_eq!(rule_of(e), ("quota".to_string(), "ml/vision".to_string()));
    m.provision_volume(&req("c", "ml/nlp", None, 5 * GIB)).expect("c");
    let e = m.provision_volume(&req("d", "ml/nlp", None, 2 * GIB)).expect_err("department quota");
    assert_eq!(rule_of(e), ("quota".to_string(), "ml".to_string()));
    // Growing is checked the same way; shrinking frees room.
    assert_eq!(rule_of(m.resize_volume("a", 7 * GIB).expect_err("grow past")).0, "quota");
    m.resize_volume("c", 4 * GIB).expect("shrink");
    m.provision_volume(&req("d", "ml/nlp", None, GIB)).expect("room again");
}

#[test]
fn concurrent_provisioning_cannot_overrun_a_quota() {
    let (fs, ()) = meta();
    let m = &fs.meta;
    setup(m);
    m.set_policy("ml", &Policy { quota: Some(10 * GIB), ..Default::default() }).expect("ml");
    let ok = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| s.spawn(move || m.provision_volume(&req(&format!("v{i}"), "ml/vision", None, 3 * GIB)).is_ok()))
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).filter(|ok| *ok).count()
    });
    assert_eq!(ok, 3, "exactly three 3 GiB volumes fit in 10 GiB");
}

#[test]
fn access_modes_come_from_class_and_policy() {
    let (fs, ()) = meta();
    let m = &fs.meta;
    setup(m);
    let mut rwo = class("rwo");
    rwo.access_modes = vec![AccessMode::ReadWriteOnce];
    m.create_class(&rwo).expect("rwo");
    let mut r = req("a", "ml", Some("rwo"), 0);
    assert!(matches!(m.provision_volume(&r), Err(MetaError::Invalid(_))), "class does not offer RWX");
    r.access_mode = Some(AccessMode::ReadWriteOnce);
    m.provision_volume(&r).expect("RWO in rwo");
    m.set_policy("ml", &Policy { access_modes: Some(vec![AccessMode::ReadOnlyMany]), ..Default::default() })
        .expect("policy");
    let mut r2 = req("b", "ml/vision", Some("fast"), 0);
    assert_eq!(rule_of(m.provision_volume(&r2).expect_err("RWX refused")).0, "access_modes");
    r2.access_mode = Some(AccessMode::ReadOnlyMany);
    m.provision_volume(&r2).expect("ROX allowed");
}

#[test]
fn expansion_follows_the_class_and_never_shrinks_below_use() {
    let (fs, ()) = meta();
    let m = &fs.meta;
    setup(m);
    let mut fixed = class("fixed");
    fixed.allow_expansion = false;
    m.create_class(&fixed).expect("fixed");
    m.provision_volume(&req("f", "ml", Some("fixed"), GIB)).expect("f");
    assert!(matches!(m.resize_volume("f", 2 * GIB), Err(MetaError::Invalid(_))), "class forbids growth");
    m.resize_volume("f", GIB / 2).expect("shrinking an empty volume");
    let v = m.provision_volume(&req("g", "ml", Some("fast"), GIB)).expect("g");
    let (ino, _, _) = m
        .mknod(&strata_meta::Ctx::root(), v.root, b"data", strata_meta::FileType::File, 0o644, 0, 0, b"", true)
        .expect("file");
    m.setattr(&strata_meta::Ctx::root(), ino, &strata_meta::SetAttr { size: Some(100 << 20), ..Default::default() })
        .expect("100 MiB");
    assert!(matches!(m.resize_volume("g", 50 << 20), Err(MetaError::Invalid(_))), "below use");
    assert_eq!(m.resize_volume("g", 2 * GIB).expect("grow").capacity, 2 * GIB);
}

#[test]
fn policies_name_existing_classes_only() {
    let (fs, ()) = meta();
    let m = &fs.meta;
    setup(m);
    assert_eq!(
        m.set_policy("ml", &Policy { enforced_class: Some("nope".into()), ..Default::default() }),
        Err(MetaError::NoClass("nope".into()))
    );
    assert!(matches!(
        m.set_policy(
            "ml",
            &Policy {
                allowed_classes: Some(vec!["fast".into()]),
                default_class: Some("cheap".into()),
                ..Default::default()
            }
        ),
        Err(MetaError::Invalid(_))
    ));
    assert_eq!(m.policy("nope/x"), Err(MetaError::NoScope("nope/x".into())));
}

#[test]
fn a_volume_qos_overrides_its_class_until_cleared_and_goes_with_the_volume() {
    let (fs, ()) = meta();
    let m = &fs.meta;
    let limited = StorageClass { qos: Qos { bytes_per_sec: 100, ops_per_sec: 7 }, ..class("limited") };
    m.create_class(&limited).expect("class");
    let v = m.provision_volume(&req("q", "cluster", Some("limited"), 0)).expect("volume");
    assert_eq!(m.volume_qos(v.id), Ok(None));
    assert_eq!(m.effective_qos(v.id), Ok((100, 7)), "the class's");
    m.set_volume_qos("q", Some((1 << 20, 0))).expect("set");
    assert_eq!(m.volume_qos(v.id), Ok(Some((1 << 20, 0))));
    assert_eq!(m.effective_qos(v.id), Ok((1 << 20, 0)), "the volume's own, 0 unlimited");
    assert!(matches!(m.set_volume_qos("q", Some((MAX_SETTING + 1, 0))), Err(MetaError::Invalid(_))));
    assert_eq!(m.set_volume_qos("nope", Some((1, 1))).map(|v| v.id), Err(MetaError::NoVolume("nope".into())));
    // The volume record itself is untouched.
    assert_eq!(m.volume("q").expect("volume"), v);
    m.set_volume_qos("q", None).expect("clear");
    assert_eq!(m.volume_qos(v.id), Ok(None));
    assert_eq!(m.effective_qos(v.id), Ok((100, 7)));
    m.set_volume_qos("q", Some((5, 5))).expect("set again");
    m.delete_volume("q").expect("delete");
    assert_eq!(m.volume_qos(v.id), Ok(None), "deleted with the volume");
}
