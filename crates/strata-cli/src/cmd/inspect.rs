//! `strata info` and `strata summary`: what a path is made of (inode, chunks, slices, blocks
//! and where they live) and a tree of sizes and counts, answered by the server from one
//! consistent read.

use std::path::Path;

use anyhow::{Context, Result, bail};
use strata_server::inspect::{InfoView, PathRequest, SummaryView};

use crate::cmd::rest::Api;
use crate::util::{ServerArgs, TokenArgs, human, print_table, unescape};

/// Show what a file or directory is made of: inode, chunks, slices, blocks and where they live.
///
/// PATH is `VOLUME:/path/in/volume`, or a path inside a Strata mount on this host (its volume
/// is the mount's). For a file, each chunk (64 MiB) lists its slices (one write each, oldest
/// first: later ones cover earlier ones where they overlap) and each slice its blocks: key,
/// file (for stores in a directory), and whether the store has it (`ok`, `missing`, or
/// `journaled`: its file is still to be written by the server). Any token that sees the
/// volume may ask.
#[derive(clap::Args, Debug)]
pub struct InfoArgs {
    /// `VOLUME:/path`, or a path in a Strata mount.
    #[arg(value_name = "PATH")]
    path: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    token: TokenArgs,
}

/// Show the sizes and counts of a tree: bytes, files and directories under each entry.
///
/// PATH is `VOLUME:/path/in/volume`, or a path inside a Strata mount on this host. The tree
/// is summed as of one moment by the server (no walk over the mount), with its largest
/// entries shown down to --depth levels.
#[derive(clap::Args, Debug)]
pub struct SummaryArgs {
    /// `VOLUME:/path`, or a path in a Strata mount.
    #[arg(value_name = "PATH")]
    path: String,
    /// Levels of entries to show under PATH (0: the total only).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=64))]
    depth: u32,
    /// Most entries shown per directory (the largest; all are counted).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=10000))]
    limit: u64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    token: TokenArgs,
}

/// The volume and in-volume path PATH names.
fn target(path: &str) -> Result<(String, String)> {
    let local = Path::new(path);
    if local.exists() {
        let canon = std::fs::canonicalize(local).with_context(|| format!("cannot resolve {path}"))?;
        let info = std::fs::read_to_string("/proc/self/mountinfo").context("cannot read /proc/self/mountinfo")?;
        // The innermost Strata mount holding the path.
        let mut best: Option<(std::path::PathBuf, String)> = None;
        for l in info.lines() {
            let f: Vec<&str> = l.split(' ').collect();
            let Some(sep) = f.iter().position(|x| *x == "-") else { continue };
            let (Some(mp), Some(fstype), Some(source)) = (f.get(4), f.get(sep + 1), f.get(sep + 2)) else { continue };
            let Some(volume) = source.strip_prefix("strata:") else { continue };
            let mp = std::path::PathBuf::from(unescape(mp));
            if fstype.starts_with("fuse")
                && canon.starts_with(&mp)
                && best.as_ref().is_none_or(|(b, _)| mp.as_os_str().len() > b.as_os_str().len())
            {
                best = Some((mp, unescape(volume)));
            }
        }
        if let Some((mp, volume)) = best {
            if volume.contains('@') || volume.starts_with("dv:") {
                bail!("{path} is in a snapshot or data volume mount ({volume}); give VOLUME:/path of a volume");
            }
            let rel = canon.strip_prefix(&mp).unwrap_or(Path::new(""));
            return Ok((volume, format!("/{}", rel.display())));
        }
        if !path.contains(':') {
            bail!("{path} is not in a Strata mount; give VOLUME:/path");
        }
    }
    match path.split_once(':') {
        Some((volume, p)) if !volume.is_empty() && (p.is_empty() || p.starts_with('/')) => {
            Ok((volume.to_string(), if p.is_empty() { "/".into() } else { p.to_string() }))
        }
        _ => bail!("{path}: not VOLUME:/path, nor a path in a Strata mount"),
    }
}

/// Runs `strata info`.
pub fn run_info(args: InfoArgs) -> Result<()> {
    let (volume, path) = target(&args.path)?;
    let api = Api::new(&args.server, &args.token)?;
    let req = PathRequest { volume, path, depth: None, limit: None };
    let v: InfoView = crate::runtime()?.block_on(api.post("/v1/paths/info", &req)).context("info")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("{}", v.path);
    println!(
        "  inode {}: {}, {} bytes ({}), {} links, mode {}, uid {} gid {}, {} xattrs",
        v.ino,
        v.kind,
        v.size,
        human(v.size),
        v.nlink,
        v.mode,
        v.uid,
        v.gid,
        v.xattrs
    );
    if let Some(n) = v.entries {
        println!("  {n} entries");
    }
    if let Some(t) = &v.target {
        println!("  target: {t}");
    }
    if let Some(s) = &v.store {
        let slices: usize = v.chunks.iter().map(|c| c.slices.len()).sum();
        let blocks: usize = v.chunks.iter().flat_map(|c| &c.slices).map(|s| s.blocks.len()).sum();
        println!("  {} chunks, {slices} slices, {blocks} blocks in {s}", v.chunks.len());
    }
    for c in &v.chunks {
        println!("  chunk {} (offset {}):", c.index, u64::from(c.index) << 26);
        for s in &c.slices {
            if s.id == 0 {
                println!("    hole at {}+{}", s.pos, s.len);
                continue;
            }
            println!(
                "    slice {} at {}+{} (bytes {}..{} of its {}), {} blocks",
                s.id,
                s.pos,
                s.len,
                s.off,
                u64::from(s.off) + u64::from(s.len),
                s.size,
                s.blocks.len()
            );
            let rows: Vec<Vec<String>> = s
                .blocks
                .iter()
                .map(|b| {
                    vec![
                        format!("      {}", b.file.clone().unwrap_or_else(|| b.key.clone())),
                        b.len.to_string(),
                        b.stored.map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
                        b.state.clone(),
                    ]
                })
                .collect();
            print_table(&["      BLOCK", "LENGTH", "STORED", "STATE"], &rows);
        }
    }
    if v.unchecked_blocks > 0 {
        println!("  ({} more blocks not checked in the store)", v.unchecked_blocks);
    }
    Ok(())
}

/// Runs `strata summary`.
pub fn run_summary(args: SummaryArgs) -> Result<()> {
    let (volume, path) = target(&args.path)?;
    let api = Api::new(&args.server, &args.token)?;
    let req = PathRequest { volume, path, depth: Some(args.depth), limit: Some(args.limit as usize) };
    let v: SummaryView = crate::runtime()?.block_on(api.post("/v1/paths/summary", &req)).context("summary")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let mut rows = Vec::new();
    fn walk(n: &SummaryView, indent: usize, rows: &mut Vec<Vec<String>>) {
        let name = if n.dir && indent > 0 { format!("{}/", n.name) } else { n.name.clone() };
        rows.push(vec![
            format!("{}{name}", "  ".repeat(indent)),
            human(n.size),
            n.files.to_string(),
            n.dirs.to_string(),
        ]);
        for c in &n.children {
            walk(c, indent + 1, rows);
        }
    }
    walk(&v, 0, &mut rows);
    print_table(&["PATH", "SIZE", "FILES", "DIRS"], &rows);
    Ok(())
}
