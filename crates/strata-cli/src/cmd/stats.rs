//! `strata stats MOUNTPOINT|SERVER`: a live, top-like view of a mount or a server, from its
//! metrics (a mount's through its `strata.metrics` extended attribute, a server's from
//! `http://SERVER/metrics`): operation rates, throughput, latency and cache hit ratio.

use std::collections::HashMap;
use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::util::{human, parse_duration};

/// Live, top-like view of a mount's or a server's operation rates, throughput, latency.
///
/// Give a mount point (on the host of the mount) or a server's HOST:PORT; the view is refreshed
/// every interval until interrupted (or `-n` times). Rates are over the last interval. For a mount: FUSE operations per second and their mean
/// latency, bytes read and written per second, the block cache's hit ratio (of block reads),
/// block-store requests, write-back memory in use. For a server: RPCs per second by method and
/// their mean latency, metadata transactions, sessions, slices waiting for collection.
#[derive(clap::Args, Debug)]
pub struct StatsArgs {
    /// A Strata mount point, or a server's HOST:PORT.
    pub target: String,
    /// Time between refreshes.
    #[arg(short, long, default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Stop after this many refreshes (default: until interrupted).
    #[arg(short = 'n', long)]
    pub count: Option<u64>,
    /// Operations shown, busiest first.
    #[arg(long, default_value_t = 12)]
    pub top: usize,
}

/// One scrape: `name{labels}` → value.
type Samples = HashMap<String, f64>;

/// Parses `name{labels} value` lines (comments and buckets skipped).
fn parse(text: &str) -> Samples {
    let mut out = HashMap::new();
    for l in text.lines() {
        if l.starts_with('#') || l.contains("_bucket{") {
            continue;
        }
        if let Some((k, v)) = l.rsplit_once(' ')
            && let Ok(v) = v.parse::<f64>()
        {
            let k = if k.contains('{') { k.to_string() } else { format!("{k}{{}}") };
            out.insert(k, v);
        }
    }
    out
}

enum Source {
    Mount(CString),
    Server(String),
}

impl Source {
    fn of(target: &str) -> Result<Source> {
        let p = Path::new(target);
        if p.is_dir() {
            if !crate::util::is_strata_mount(p) {
                bail!("{target} is a directory but not a Strata mount point");
            }
            let c = CString::new(p.as_os_str().as_bytes()).context("mount point path")?;
            return Ok(Source::Mount(c));
        }
        if target.starts_with('/') || target.starts_with('.') {
            bail!("{target}: no such directory (give a Strata mount point, or a server's HOST:PORT)");
        }
        let addr = target.trim_start_matches("http://").trim_end_matches('/');
        Ok(Source::Server(addr.to_string()))
    }

    async fn scrape(&self) -> Result<Samples> {
        match self {
            Source::Mount(path) => {
                let path = path.clone();
                let text = tokio::task::spawn_blocking(move || read_xattr(&path, c"strata.metrics"))
                    .await
                    .context("metrics task")?
                    .context("reading the mount's metrics (strata.metrics)")?;
                Ok(parse(&text))
            }
            Source::Server(addr) => Ok(parse(&http_get(addr, "/metrics").await?)),
        }
    }
}

fn read_xattr(path: &CString, name: &std::ffi::CStr) -> std::io::Result<String> {
    let mut buf = vec![0u8; 64 << 10];
    // SAFETY: the path and name are NUL-terminated; the buffer is valid for its length.
    let n = unsafe { libc::getxattr(path.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

async fn http_get(addr: &str, path: &str) -> Result<String> {
    use http_body_util::{BodyExt, Empty};
    let sock = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| anyhow::anyhow!("cannot reach {addr}: timed out"))?
        .with_context(|| format!("cannot reach {addr}"))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(sock))
        .await
        .with_context(|| format!("cannot talk HTTP to {addr}"))?;
    tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, addr)
        .body(Empty::<bytes::Bytes>::new())
        .context("request")?;
    let resp = send.send_request(req).await.with_context(|| format!("GET http://{addr}{path}"))?;
    let status = resp.status();
    let body = resp.into_body().collect().await.context("reading the answer")?.to_bytes();
    if !status.is_success() {
        bail!("GET http://{addr}{path}: {status} (is it a Strata server?)");
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Per-label (`method`, ...) rate and mean latency of the histogram `name` between two scrapes,
/// busiest first: (label value, ops/s, mean seconds).
fn op_rates(a: &Samples, b: &Samples, name: &str, dt: f64) -> Vec<(String, f64, f64)> {
    let prefix = format!("{name}_count{{");
    let mut out = Vec::new();
    for (k, &n1) in b {
        let Some(labels) = k.strip_prefix(&prefix) else { continue };
        let n0 = a.get(k).copied().unwrap_or(0.0);
        let sum_key = format!("{name}_sum{{{labels}");
        let s1 = b.get(&sum_key).copied().unwrap_or(0.0);
        let s0 = a.get(&sum_key).copied().unwrap_or(0.0);
        let dn = n1 - n0;
        if dn <= 0.0 {
            continue;
        }
        let label = labels
            .trim_end_matches('}')
            .split(',')
            .map(|kv| kv.split_once('=').map_or(kv, |(_, v)| v))
            .collect::<Vec<_>>()
            .join(" ");
        out.push((label.replace('"', ""), dn / dt, (s1 - s0) / dn));
    }
    out.sort_by(|x, y| y.1.total_cmp(&x.1));
    out
}

fn delta(a: &Samples, b: &Samples, key: &str) -> f64 {
    b.get(key).copied().unwrap_or(0.0) - a.get(key).copied().unwrap_or(0.0)
}

/// Sum over every sample whose key starts with `prefix`.
fn total(s: &Samples, prefix: &str) -> f64 {
    s.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(_, v)| v).sum()
}

fn latency(secs: f64) -> String {
    if secs >= 1.0 {
        format!("{secs:.2} s")
    } else if secs >= 0.001 {
        format!("{:.2} ms", secs * 1e3)
    } else {
        format!("{:.0} µs", secs * 1e6)
    }
}

fn rate(bytes_per_sec: f64) -> String {
    format!("{}/s", human(bytes_per_sec.max(0.0) as u64))
}

/// The view of one interval.
fn render(target: &str, mount: bool, a: &Samples, b: &Samples, dt: f64, top: usize) -> String {
    let mut o = String::new();
    let mut line = |s: String| {
        o.push_str(&s);
        o.push('\n');
    };
    line(format!("strata stats {target}   (over the last {dt:.1} s)"));
    if mount {
        let hits = delta(a, b, "strata_blockcache_hits_total{}");
        let misses = delta(a, b, "strata_blockcache_miss_total{}");
        let ratio = if hits + misses > 0.0 { format!("{:.1}%", 100.0 * hits / (hits + misses)) } else { "-".into() };
        line(format!(
            "read {}   write {}   cache hits {ratio} of {} block reads   write-back {}",
            rate(delta(a, b, "strata_read_bytes_total{}") / dt),
            rate(delta(a, b, "strata_written_bytes_total{}") / dt),
            (hits + misses) as u64,
            human(b.get("strata_used_buffer_size_bytes{}").copied().unwrap_or(0.0) as u64),
        ));
        let gets = total(b, "strata_object_request_durations_histogram_seconds_count{")
            - total(a, "strata_object_request_durations_histogram_seconds_count{");
        line(format!(
            "block store {:.0} req/s, {} in, cache {} in memory",
            gets / dt,
            rate(
                (total(b, "strata_object_request_data_bytes_total{")
                    - total(a, "strata_object_request_data_bytes_total{"))
                    / dt
            ),
            human(b.get("strata_blockcache_bytes{}").copied().unwrap_or(0.0) as u64),
        ));
        line(String::new());
        line(format!("{:<14} {:>10} {:>12}", "OPERATION", "OPS/S", "MEAN LATENCY"));
        for (op, r, l) in op_rates(a, b, "strata_fuse_ops_durations_histogram_seconds", dt).into_iter().take(top) {
            line(format!("{op:<14} {r:>10.1} {:>12}", latency(l)));
        }
    } else {
        line(format!(
            "sessions {}   pending slices {}   journal backlog {}   transactions {:.0}/s",
            b.get("strata_sessions{}").copied().unwrap_or(0.0),
            b.get("strata_pending_slices{}").copied().unwrap_or(0.0),
            b.get("strata_journal_backlog_blocks{}").copied().unwrap_or(0.0),
            (total(b, "strata_transaction_durations_histogram_seconds_count{")
                - total(a, "strata_transaction_durations_histogram_seconds_count{"))
                / dt,
        ));
        line(String::new());
        line(format!("{:<16} {:>10} {:>12}", "RPC", "CALLS/S", "MEAN LATENCY"));
        for (op, r, l) in op_rates(a, b, "strata_rpc_durations_histogram_seconds", dt).into_iter().take(top) {
            line(format!("{op:<16} {r:>10.1} {:>12}", latency(l)));
        }
    }
    o
}

/// Runs `strata stats`.
pub fn run(args: StatsArgs) -> Result<()> {
    if args.interval.is_zero() {
        bail!("--interval must be more than 0");
    }
    let source = Source::of(&args.target)?;
    let mount = matches!(source, Source::Mount(_));
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    crate::runtime()?.block_on(async {
        let mut prev = source.scrape().await?;
        let mut at = Instant::now();
        let mut shown = 0;
        loop {
            if args.count.is_some_and(|n| shown >= n) {
                return Ok(());
            }
            tokio::time::sleep(args.interval).await;
            let now = source.scrape().await?;
            let dt = at.elapsed().as_secs_f64();
            at = Instant::now();
            let view = render(&args.target, mount, &prev, &now, dt, args.top);
            let mut out = std::io::stdout().lock();
            if tty {
                // Clear the screen and go home, as top does.
                let _ = write!(out, "\x1b[2J\x1b[H");
            }
            let _ = writeln!(out, "{view}");
            let _ = out.flush();
            prev = now;
            shown += 1;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_from_two_scrapes() {
        let a = parse(
            "strata_fuse_ops_durations_histogram_seconds_count{method=\"read\"} 10\nstrata_fuse_ops_durations_histogram_seconds_sum{method=\"read\"} 0.5\n# EOF\n",
        );
        let b = parse(
            "strata_fuse_ops_durations_histogram_seconds_count{method=\"read\"} 30\nstrata_fuse_ops_durations_histogram_seconds_sum{method=\"read\"} 0.7\nstrata_read_bytes_total 2048\n",
        );
        let r = op_rates(&a, &b, "strata_fuse_ops_durations_histogram_seconds", 2.0);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].0, "read");
        assert!((r[0].1 - 10.0).abs() < 1e-9 && (r[0].2 - 0.01).abs() < 1e-9);
        assert_eq!(delta(&a, &b, "strata_read_bytes_total{}"), 2048.0);
        let v = render("/mnt", true, &a, &b, 2.0, 5);
        assert!(v.contains("read 1.0 KiB/s") && v.contains("10.0"), "{v}");
    }
}
