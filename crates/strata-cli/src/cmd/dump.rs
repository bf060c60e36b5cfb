//! `strata dump` and `strata load`: back up a running server's metadata, restore it into an
//! empty store (of either engine: the way from embedded SQLite to PostgreSQL).

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use http_body_util::BodyExt;

use crate::cmd::rest::Api;
use crate::util::{ServerArgs, TokenArgs};

/// Back up all metadata of a running server to FILE, as one point in time.
///
/// The server streams every record of its metadata store (namespace, snapshots and their
/// saved versions, clones, data volumes, storage classes, scopes, policies, token hashes,
/// quotas, usage and id counters) read in one snapshot transaction, while clients go on
/// working. The file is JSON lines: a header, one line per record, a trailer (see the README,
/// "Backup and restore"). Needs a cluster admin token. Blocks are not part of it: back up the
/// block store (directory or bucket) with its own tools, after the dump.
#[derive(clap::Args, Debug)]
pub struct DumpArgs {
    /// Where to write the dump; `-` for standard output. Written aside and renamed into place
    /// when complete, so FILE is never a partial dump.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    token: TokenArgs,
}

/// Restore a dump into an empty metadata store (SQLite or PostgreSQL), with no server running.
///
/// The store is the one `strata server --data DIR [--meta URL]` would use. It must be empty:
/// never used by a server (a server's first start already writes a storage class and a
/// token), or left by a load that did not finish (that one is started over). Load first, then
/// start the server on the store; tokens, volumes and their block store URLs are those of the
/// dump, so the server must reach the same blocks directory or bucket.
#[derive(clap::Args, Debug)]
pub struct LoadArgs {
    /// The dump to load (`strata dump`); `-` for standard input.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// The data directory of the server that will use the store (its default SQLite store is
    /// DIR/meta.db).
    #[arg(long, env = "STRATA_DATA", value_name = "DIR")]
    data: Option<PathBuf>,
    /// The metadata store to load into: `sqlite:///path/meta.db` or
    /// `postgres://user:password@host:port/database` (default: DATA_DIR/meta.db).
    #[arg(long, env = "STRATA_META", value_name = "URL")]
    meta: Option<String>,
}

/// Runs `strata dump`.
pub fn run_dump(args: DumpArgs) -> Result<()> {
    let api = Api::new(&args.server, &args.token)?;
    let to_stdout = args.file.as_os_str() == "-";
    let (tmp, mut out): (Option<PathBuf>, Box<dyn Write>) = if to_stdout {
        (None, Box::new(std::io::stdout().lock()))
    } else {
        let tmp = partial_path(&args.file)?;
        let f = std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        (Some(tmp), Box::new(std::io::BufWriter::new(f)))
    };
    let res = crate::runtime()?.block_on(fetch(&api, &mut out));
    let res = res.and_then(|n| {
        out.flush().context("cannot write the dump")?;
        Ok(n)
    });
    drop(out);
    let records = match (res, &tmp) {
        (Ok(n), _) => n,
        (Err(e), Some(tmp)) => {
            let _ = std::fs::remove_file(tmp);
            return Err(e);
        }
        (Err(e), None) => return Err(e),
    };
    if let Some(tmp) = tmp {
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("cannot sync {}", tmp.display()))?;
        std::fs::rename(&tmp, &args.file)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), args.file.display()))?;
        eprintln!("dumped {records} records to {}", args.file.display());
    }
    Ok(())
}

/// `FILE.partial` next to FILE.
fn partial_path(file: &Path) -> Result<PathBuf> {
    let Some(name) = file.file_name() else { bail!("{}: not a file name", file.display()) };
    let mut partial = name.to_os_string();
    partial.push(".partial");
    Ok(file.with_file_name(partial))
}

/// Bytes kept of the end of a dump: more than its trailer line.
const TAIL: usize = 4096;

/// Streams the dump into `out`; the number of records its trailer counts, once seen.
async fn fetch(api: &Api, out: &mut dyn Write) -> Result<u64> {
    let (resp, conn) = api.streamed(hyper::Method::GET, "/v1/admin/dump", None::<&()>).await.context("dump")?;
    let mut body = resp.into_body();
    // The end of what came: its last line is the (short) trailer when the dump is whole.
    let mut tail: Vec<u8> = Vec::new();
    let res = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.context("the dump was cut short (the server's log says why)")?;
            let Ok(data) = frame.into_data() else { continue };
            out.write_all(&data).context("cannot write the dump")?;
            tail.extend_from_slice(&data[data.len().saturating_sub(TAIL)..]);
            tail.drain(..tail.len().saturating_sub(TAIL));
        }
        let body = tail.strip_suffix(b"\n").unwrap_or(&tail);
        let last = body.rsplit(|b| *b == b'\n').next().unwrap_or_default();
        let trailer: serde_json::Value = serde_json::from_slice(last).context("the dump was cut short: no trailer")?;
        match (trailer["end"].as_bool(), trailer["records"].as_u64()) {
            (Some(true), Some(n)) => Ok(n),
            _ => bail!("the dump was cut short: no trailer"),
        }
    }
    .await;
    conn.abort();
    res
}

/// Runs `strata load`.
pub fn run_load(args: LoadArgs) -> Result<()> {
    let url = match (&args.meta, &args.data) {
        (Some(m), _) => m.clone(),
        (None, Some(d)) => {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
            strata_server::ops::meta_url(d, None)
        }
        (None, None) => bail!("say which store to load into: --data DIR (its meta.db) or --meta URL"),
    };
    let mut input: Box<dyn BufRead> = if args.file.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let f = std::fs::File::open(&args.file).with_context(|| format!("cannot open {}", args.file.display()))?;
        Box::new(std::io::BufReader::with_capacity(1 << 20, f))
    };
    let stats = strata_server::ops::load(&url, &mut input).context("load")?;
    eprintln!("loaded {} records ({} bytes of metadata)", stats.records, stats.bytes);
    Ok(())
}
