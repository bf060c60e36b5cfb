//! `strata fsck` and `strata gc`: check a running server's metadata against itself and its
//! block stores, repair what is safe, and collect garbage. The server does the work
//! (`strata_server::fsck`) and streams its report; this prints it as it comes.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use http_body_util::BodyExt;
use hyper::Method;
use serde::Serialize;
use strata_server::fsck::{FsckRequest, GcRequest, Problem, ReportLine, Summary};

use crate::cmd::rest::Api;
use crate::util::{ServerArgs, TokenArgs, parse_duration};

/// Check a running server's metadata and blocks; exit 1 if problems remain.
///
/// Online: clients go on working. The server lists its block stores, then reads the namespace
/// as one point in time, and checks that every block a file or snapshot references exists with
/// the right length, that no block is orphaned (unreferenced and older than --grace), that
/// link counts, directory entries and usage counters agree with the namespace. Each problem is
/// printed with the path it affects, and what --repair does about it. With --repair it rebuilds
/// usage counters and link counts, gives entries whose inode is missing a rebuilt inode (from
/// the chunks, target or entries left), and deletes orphaned blocks; it never deletes anything
/// a file, snapshot or pending slice could still need (missing blocks, truncated blocks and
/// inodes nothing names are reported for a person to decide). Needs a cluster admin token.
#[derive(clap::Args, Debug)]
pub struct FsckArgs {
    /// Fix what is safe to fix (see above).
    #[arg(long)]
    repair: bool,
    /// Unreferenced blocks younger than this are not orphans: a client may still commit them.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    grace: Duration,
    /// Print the report as JSON lines (one per problem, then the summary).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    token: TokenArgs,
}

/// Show (or delete) garbage: leaked blocks and slices pending deletion.
///
/// Leaked blocks are blocks no file, snapshot or pending slice references, older than
/// --grace (uploads of clients that died before committing). Pending slices are slices whose
/// last reference went; the server deletes their blocks in the background once no client has
/// their file open. A dry run by default: --delete deletes the leaked blocks and collects the
/// pending slices now. Needs a cluster admin token.
#[derive(clap::Args, Debug)]
pub struct GcArgs {
    /// Delete the leaked blocks and collect the pending slices now.
    #[arg(long)]
    delete: bool,
    /// Unreferenced blocks younger than this are not leaked: a client may still commit them.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    grace: Duration,
    /// Print the report as JSON lines.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    token: TokenArgs,
}

/// Runs `strata fsck`.
pub fn run_fsck(args: FsckArgs) -> Result<()> {
    let api = Api::new(&args.server, &args.token)?;
    let req = FsckRequest { repair: args.repair, grace_secs: Some(args.grace.as_secs()) };
    let (problems, sum) = crate::runtime()?.block_on(report(&api, "/v1/admin/fsck", &req, args.json, "fsck"))?;
    let left = problems.iter().filter(|p| p.fixed != Some(true)).count();
    if !args.json {
        println!(
            "checked {} volumes, {} inodes, {} entries, {} slices, {} blocks ({} bytes)",
            sum.volumes, sum.inodes, sum.entries, sum.slices, sum.blocks, sum.block_bytes
        );
        if sum.young_blocks > 0 {
            println!("{} unreferenced blocks younger than --grace left alone", sum.young_blocks);
        }
    }
    if left > 0 {
        let fixable = problems.iter().filter(|p| p.fixed.is_none() && p.fix.is_some()).count();
        let hint = if fixable > 0 { format!(" ({fixable} can be fixed with --repair)") } else { String::new() };
        bail!("{left} problems found{hint}");
    }
    if !args.json {
        match sum.fixed {
            0 => println!("no problems found"),
            n => println!("{n} problems repaired"),
        }
    }
    Ok(())
}

/// Runs `strata gc`.
pub fn run_gc(args: GcArgs) -> Result<()> {
    let api = Api::new(&args.server, &args.token)?;
    let req = GcRequest { delete: args.delete, grace_secs: Some(args.grace.as_secs()) };
    let (problems, sum) = crate::runtime()?.block_on(report(&api, "/v1/admin/gc", &req, args.json, "gc"))?;
    if args.json {
        return Ok(());
    }
    let leaked: u64 = problems.len() as u64;
    if args.delete {
        println!("deleted {} leaked blocks; collected {} pending slices", sum.deleted_blocks, sum.collected_slices);
        let failed = problems.iter().filter(|p| p.fixed == Some(false)).count();
        if failed > 0 {
            bail!("{failed} leaked blocks could not be deleted");
        }
    } else {
        println!(
            "{leaked} leaked blocks; {} slices ({} bytes) pending deletion; {} unreferenced blocks younger than --grace",
            sum.pending_slices, sum.pending_bytes, sum.young_blocks
        );
        if leaked > 0 || sum.pending_slices > 0 {
            println!("run with --delete to delete them now");
        }
    }
    Ok(())
}

/// Streams a report, printing each problem as it arrives; the problems and the summary.
async fn report(
    api: &Api,
    path: &str,
    req: &impl Serialize,
    json: bool,
    what: &str,
) -> Result<(Vec<Problem>, Summary)> {
    let (resp, conn) = api.streamed(Method::POST, path, Some(req)).await.context(what.to_string())?;
    let mut body = resp.into_body();
    let mut buf: Vec<u8> = Vec::new();
    let mut problems = Vec::new();
    let mut summary = None;
    let res = async {
        loop {
            let frame = match body.frame().await {
                Some(f) => f.with_context(|| format!("{what}: the report was cut short"))?,
                None => break,
            };
            let Ok(data) = frame.into_data() else { continue };
            buf.extend_from_slice(&data);
            while let Some(i) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=i).collect();
                let parsed: ReportLine =
                    serde_json::from_slice(&line).with_context(|| format!("{what}: unexpected report line"))?;
                if json {
                    println!("{}", String::from_utf8_lossy(&line).trim_end());
                }
                match parsed {
                    ReportLine::Problem(p) => {
                        if !json {
                            print_problem(&p);
                        }
                        problems.push(p);
                    }
                    ReportLine::Summary(s) => summary = Some(s),
                    ReportLine::Error { message } => bail!("{what} stopped: {message}"),
                }
            }
        }
        let Some(s) = summary.take() else { bail!("{what}: the report was cut short (no summary)") };
        Ok(s)
    }
    .await;
    conn.abort();
    Ok((problems, res?))
}

fn print_problem(p: &Problem) {
    let state = match (p.fixed, &p.fix) {
        (Some(true), _) => " [repaired]".to_string(),
        (Some(false), _) => " [repair failed]".to_string(),
        (None, Some(fix)) => format!(" [--repair: {fix}]"),
        (None, None) => String::new(),
    };
    println!("{:<18} {}: {}{state}", p.kind, p.path, p.detail);
}
