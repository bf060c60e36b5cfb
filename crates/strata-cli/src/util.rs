//! Shared helpers of the subcommands: sizes, durations, tokens, logging.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// Parses a size like `512`, `64K`, `10GiB`, `1.5T` (binary units).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("{s:?} is not a size (try 512M, 10GiB)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        "p" | "pb" | "pib" => 1 << 50,
        u => return Err(format!("unknown size unit {u:?} in {s:?} (use K, M, G, T, P)")),
    };
    if !n.is_finite() || n < 0.0 {
        return Err(format!("{s:?} is not a size"));
    }
    let v = n * mult as f64;
    if v > u64::MAX as f64 / 2.0 {
        return Err(format!("{s:?} is too large"));
    }
    Ok(v as u64)
}

/// Parses a duration like `500ms`, `1s`, `2m`, or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("{s:?} is not a duration (try 500ms, 1s, 2m)"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        u => return Err(format!("unknown duration unit {u:?} in {s:?}")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("{s:?} is not a duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Human-readable binary size.
pub fn human(n: u64) -> String {
    const U: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 { format!("{n} B") } else { format!("{v:.1} {}", U[i]) }
}

/// Output formats of the commands that show records.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// JSON (the REST API's representation).
    Json,
    /// YAML (the same fields as JSON).
    Yaml,
}

/// Prints `v` as JSON or YAML, or calls `table` to print it for people.
pub fn emit<T: serde::Serialize>(out: Output, v: &T, table: impl FnOnce()) -> Result<()> {
    match out {
        Output::Table => table(),
        Output::Json => println!("{}", serde_json::to_string_pretty(v)?),
        Output::Yaml => print!("{}", yaml_serde::to_string(v)?),
    }
    Ok(())
}

/// Prints rows under upper-case headers, each column as wide as its widest cell.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut width: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = width.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let n = cells.len();
        let mut s = String::new();
        for (i, c) in cells.into_iter().enumerate() {
            s.push_str(c);
            if i + 1 < n {
                let pad = width[i] + 3 - c.chars().count();
                s.extend(std::iter::repeat_n(' ', pad));
            }
        }
        println!("{}", s.trim_end());
    };
    line(headers.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

/// Prints `key: value` lines with the values aligned.
pub fn print_fields(fields: &[(&str, String)]) {
    let w = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    for (k, v) in fields {
        println!("{:<w$} {v}", format!("{k}:"));
    }
}

/// A size for a table: `-` for 0 (unlimited or unset), else binary units.
pub fn size_or_dash(n: u64) -> String {
    if n == 0 { "-".into() } else { human(n) }
}

/// Parses a token lifetime: `3600`, `90s`, `30m`, `12h`, `30d`, `2w`, `1y`.
pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a lifetime (try 12h, 30d, 1y)"))?;
    let mult: u64 = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        "y" => 365 * 86_400,
        u => return Err(format!("unknown lifetime unit {u:?} in {s:?} (use s, m, h, d, w, y)")),
    };
    let secs = n.checked_mul(mult).ok_or_else(|| format!("{s:?} is too long"))?;
    if secs == 0 {
        return Err("a lifetime must be at least one second".into());
    }
    Ok(Duration::from_secs(secs))
}

/// How a command finds its token: flag, environment, or file.
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Server and token")]
pub struct TokenArgs {
    /// Access token (prefer --token-file or STRATA_TOKEN: command lines are visible to others).
    #[arg(long, global = true, env = "STRATA_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the access token, e.g. DATA_DIR/admin.token written by `strata server`.
    #[arg(long, global = true, env = "STRATA_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

impl TokenArgs {
    /// The token, or a clear error saying how to give one.
    pub fn resolve(&self) -> Result<String> {
        // An empty STRATA_TOKEN next to a token file is a variable left set, not a token.
        if let Some(t) = self.token.as_ref().filter(|t| !t.trim().is_empty() || self.token_file.is_none()) {
            if t.trim().is_empty() {
                bail!("the token given is empty");
            }
            return Ok(t.trim().to_string());
        }
        if let Some(f) = &self.token_file {
            let t = std::fs::read_to_string(f).with_context(|| format!("cannot read token file {}", f.display()))?;
            if t.trim().is_empty() {
                bail!("token file {} is empty", f.display());
            }
            return Ok(t.trim().to_string());
        }
        bail!(
            "no token given: pass --token-file DATA_DIR/admin.token (written by `strata server`), \
             --token, or set STRATA_TOKEN"
        )
    }
}

/// Where the server is.
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Server and token")]
pub struct ServerArgs {
    /// Address of `strata server`, HOST:PORT; several servers of one cluster as a comma-separated
    /// list (calls go to the first that answers; mounts fail over to the next).
    #[arg(long, global = true, env = "STRATA_SERVER", default_value = "127.0.0.1:7420")]
    pub server: String,
}

/// How a long-running command logs (`--log-format`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line, the event's fields at the top level (for log shippers).
    Json,
}

/// Sets up logging to stderr (`RUST_LOG` filters; default info). Every event is one line; its
/// fields (session, volume, client where they apply) are `key=value` words in text and keys of
/// the object in JSON.
pub fn init_logging(json: bool) {
    // fuser logs a failed reply when the kernel already dropped the request (interrupted, or
    // aborted at unmount) and a failed second unmount after an outside one; neither can be
    // acted on, so only its errors are shown. s3s logs every S3 error answer (a wrong
    // signature, a missing key) as an ERROR of `s3s::ops`: those are the clients' mistakes; the
    // gateway logs its own failures itself.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            "info,h2=warn,hyper=warn,tower=warn,fuser=error,fuser::reply=off,fuser::mnt=off,s3s::ops=off",
        )
    });
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        b.json().flatten_event(true).with_current_span(false).with_span_list(false).init();
    } else {
        b.init();
    }
}

/// Whether `path` is a mount point of a Strata FUSE file system.
pub fn is_strata_mount(path: &Path) -> bool {
    let Ok(canon) = std::fs::canonicalize(path) else { return false };
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return false };
    info.lines().any(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let Some(sep) = f.iter().position(|x| *x == "-") else { return false };
        f.get(4).is_some_and(|mp| unescape(mp) == canon.to_string_lossy())
            && f.get(sep + 1).is_some_and(|t| t.starts_with("fuse"))
            && f.get(sep + 2).is_some_and(|s| s.starts_with("strata"))
    })
}

/// A path field of `/proc/self/mountinfo` with its octal escapes undone.
pub(crate) fn unescape(s: &str) -> String {
    s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("10GiB"), Ok(10 << 30));
        assert_eq!(parse_size("1.5M"), Ok(1572864));
        assert!(parse_size("-1G").is_err());
        assert!(parse_size("12X").is_err());
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999P").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("1d").is_err());
    }

    #[test]
    fn ttls() {
        assert_eq!(parse_ttl("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_ttl("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("2w"), Ok(Duration::from_secs(14 * 86_400)));
        assert!(parse_ttl("0").is_err());
        assert!(parse_ttl("1.5d").is_err());
        assert!(parse_ttl("3x").is_err());
        assert!(parse_ttl("99999999999999999999y").is_err());
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(10), "10 B");
        assert_eq!(human(3 << 30), "3.0 GiB");
    }
}
