//! `strata policy`: show the policy in force at a scope and set a scope's own rules.

use anyhow::{Context, Result, bail};
use strata_server::rest::model::{AccessModeName, EffectivePolicyView, PolicyRules};

use crate::cmd::rest::{Api, scope_path};
use crate::cmd::volume::parse_access_mode;
use crate::util::{Output, ServerArgs, TokenArgs, emit, human, parse_size, print_table};

/// Provisioning policies. Each scope may set rules (allowed classes, a default or enforced
/// class, a maximum volume size, a total quota, access modes); a scope's effective policy
/// combines its rules with its ancestors', and a scope can only narrow what they allow.
#[derive(clap::Args, Debug)]
pub struct PolicyArgs {
    #[command(subcommand)]
    cmd: PolicyCmd,
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    token: TokenArgs,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table", global = true)]
    output: Output,
}

#[derive(clap::Subcommand, Debug)]
enum PolicyCmd {
    /// Show the policy in force at a scope: one line per rule with the scope it comes from.
    #[command(visible_alias = "get")]
    Show {
        /// `cluster`, `DEPT` or `DEPT/PROJECT`.
        scope: String,
        /// Show only the rules this scope sets itself.
        #[arg(long)]
        own: bool,
    },
    /// Set rules of a scope (admins of the scope or above); rules not named keep their value.
    Set {
        /// `cluster`, `DEPT` or `DEPT/PROJECT`.
        scope: String,
        /// Classes volumes may be created in, comma-separated.
        #[arg(long, value_name = "CLASSES")]
        allowed_classes: Option<String>,
        /// Class used when a request names none.
        #[arg(long, value_name = "CLASS")]
        default_class: Option<String>,
        /// The only class volumes may use (requests naming another are refused).
        #[arg(long, value_name = "CLASS")]
        enforced_class: Option<String>,
        /// Largest capacity of one volume, e.g. 500G.
        #[arg(long, value_parser = parse_size, value_name = "SIZE")]
        max_volume_size: Option<u64>,
        /// Largest total capacity of the volumes in the scope and below, e.g. 10T.
        #[arg(long, value_parser = parse_size, value_name = "SIZE")]
        quota: Option<u64>,
        /// Access modes volumes may have, comma-separated (ReadWriteMany/RWX, ReadOnlyMany/ROX,
        /// ReadWriteOnce/RWO).
        #[arg(long, value_delimiter = ',', value_parser = parse_access_mode, value_name = "MODES")]
        access_modes: Option<Vec<AccessModeName>>,
        /// Remove rules from this scope (left to the parent scopes): allowed-classes,
        /// default-class, enforced-class, max-volume-size, quota, access-modes, or all.
        #[arg(long, value_name = "RULE", num_args = 1.., value_parser = RULES)]
        clear: Vec<String>,
    },
}

const RULES: [&str; 7] =
    ["allowed-classes", "default-class", "enforced-class", "max-volume-size", "quota", "access-modes", "all"];

fn modes(m: &[AccessModeName]) -> String {
    if m.is_empty() { "(none)".into() } else { m.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", ") }
}

fn names(v: &[String]) -> String {
    if v.is_empty() { "(none)".into() } else { v.join(", ") }
}

fn size(n: u64) -> String {
    format!("{} ({n} bytes)", human(n))
}

fn print_effective(out: Output, e: &EffectivePolicyView) -> Result<()> {
    emit(out, e, || {
        let unset = || vec!["-".to_string(), "-".to_string()];
        let mut rows: Vec<Vec<String>> = Vec::new();
        let mut row = |rule: &str, vf: Vec<String>| {
            let mut r = vec![rule.to_string()];
            r.extend(vf);
            rows.push(r);
        };
        row(
            "allowed_classes",
            e.allowed_classes
                .as_ref()
                .map(|s| vec![names(&s.value), s.from.clone()])
                .unwrap_or_else(|| vec!["(all)".into(), "-".into()]),
        );
        row(
            "enforced_class",
            e.enforced_class.as_ref().map(|s| vec![s.value.clone(), s.from.clone()]).unwrap_or_else(unset),
        );
        row(
            "default_class",
            e.default_class.as_ref().map(|s| vec![s.value.clone(), s.from.clone()]).unwrap_or_else(unset),
        );
        row(
            "max_volume_size",
            e.max_volume_size.as_ref().map(|s| vec![size(s.value), s.from.clone()]).unwrap_or_else(unset),
        );
        if e.quotas.is_empty() {
            row("quota", unset());
        }
        for q in &e.quotas {
            row("quota", vec![size(q.value), q.from.clone()]);
        }
        row(
            "access_modes",
            e.access_modes
                .as_ref()
                .map(|s| vec![modes(&s.value), s.from.clone()])
                .unwrap_or_else(|| vec!["(all)".into(), "-".into()]),
        );
        println!("Effective policy of scope {}:", e.scope);
        print_table(&["RULE", "VALUE", "FROM"], &rows);
    })
}

fn print_own(out: Output, scope: &str, p: &PolicyRules) -> Result<()> {
    emit(out, p, || {
        let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        let rows = vec![
            vec!["allowed_classes".into(), opt(p.allowed_classes.as_deref().map(names))],
            vec!["enforced_class".into(), opt(p.enforced_class.clone())],
            vec!["default_class".into(), opt(p.default_class.clone())],
            vec!["max_volume_size".into(), opt(p.max_volume_size.map(size))],
            vec!["quota".into(), opt(p.quota.map(size))],
            vec!["access_modes".into(), opt(p.access_modes.as_deref().map(modes))],
        ];
        println!("Rules set by scope {scope} itself (- : left to the parent scopes):");
        print_table(&["RULE", "VALUE"], &rows);
    })
}

/// Runs a policy subcommand.
pub fn run(args: PolicyArgs) -> Result<()> {
    let api = Api::new(&args.server, &args.token)?;
    let out = args.output;
    crate::runtime()?.block_on(async {
        match args.cmd {
            PolicyCmd::Show { scope, own } => {
                let path = format!("/v1/policies/{}", scope_path(&scope));
                if own {
                    let p: PolicyRules =
                        api.get(&path).await.with_context(|| format!("cannot show the policy of scope {scope}"))?;
                    return print_own(out, &scope, &p);
                }
                let e: EffectivePolicyView = api
                    .get(&format!("{path}/effective"))
                    .await
                    .with_context(|| format!("cannot show the policy of scope {scope}"))?;
                print_effective(out, &e)
            }
            PolicyCmd::Set {
                scope,
                allowed_classes,
                default_class,
                enforced_class,
                max_volume_size,
                quota,
                access_modes,
                clear,
            } => {
                let nothing = allowed_classes.is_none()
                    && default_class.is_none()
                    && enforced_class.is_none()
                    && max_volume_size.is_none()
                    && quota.is_none()
                    && access_modes.is_none()
                    && clear.is_empty();
                if nothing {
                    bail!("nothing to set: give a rule (e.g. --quota 10T) or --clear RULE (see --help)");
                }
                let path = format!("/v1/policies/{}", scope_path(&scope));
                let ctx = || format!("cannot set the policy of scope {scope}");
                let mut p: PolicyRules = api.get(&path).await.with_context(ctx)?;
                for r in &clear {
                    let all = r == "all";
                    if all || r == "allowed-classes" {
                        p.allowed_classes = None;
                    }
                    if all || r == "default-class" {
                        p.default_class = None;
                    }
                    if all || r == "enforced-class" {
                        p.enforced_class = None;
                    }
                    if all || r == "max-volume-size" {
                        p.max_volume_size = None;
                    }
                    if all || r == "quota" {
                        p.quota = None;
                    }
                    if all || r == "access-modes" {
                        p.access_modes = None;
                    }
                }
                if let Some(list) = allowed_classes {
                    p.allowed_classes =
                        Some(list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect());
                }
                if let Some(c) = default_class {
                    p.default_class = Some(c);
                }
                if let Some(c) = enforced_class {
                    p.enforced_class = Some(c);
                }
                if let Some(m) = max_volume_size {
                    p.max_volume_size = Some(m);
                }
                if let Some(q) = quota {
                    p.quota = Some(q);
                }
                if let Some(m) = access_modes {
                    p.access_modes = Some(m);
                }
                let set: PolicyRules = api.put(&path, &p).await.with_context(ctx)?;
                if out != Output::Table {
                    return emit(out, &set, || {});
                }
                print_own(out, &scope, &set)
            }
        }
    })
}
