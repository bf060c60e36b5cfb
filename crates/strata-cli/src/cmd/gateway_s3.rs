//! `strata gateway s3`: the S3-compatible gateway.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use strata_s3::{Attachments, Keyring, Limits, ServerConfig};

use crate::client_args::ClientArgs;
use crate::util::{ServerArgs, parse_duration, parse_size, parse_ttl};

/// Serve volumes over an S3-compatible API (buckets are volumes, keys are paths).
///
/// Requests go through the same client file system as FUSE mounts: what is written over S3 is
/// read on every mount and the other way round. A bucket is a volume and a key is a path in it ("a/b/c.txt" is file c.txt in directories a
/// and b, created on demand). Credentials: every --token-file is one S3 key pair. The access
/// key id is the token's public id (12 hex digits, the ID column of `strata token list`) and
/// the secret access key is the token secret itself (the `strata_...` text of the file). A
/// request signed with a pair acts with exactly that token's rights: it sees only the volumes
/// of the token's scope (others answer NoSuchBucket), a viewer token may read but not write,
/// and a token revoked on the server is refused (AccessDenied) at its next request.
///
/// Example: `strata gateway s3 --token-file vision.token` then, with boto3,
/// `boto3.client("s3", endpoint_url="http://127.0.0.1:7480", aws_access_key_id=ID,
/// aws_secret_access_key=open("vision.token").read().strip())`.
#[derive(clap::Args, Debug, Clone)]
#[command(mut_arg("retry_timeout", |a| a.default_value("30s")), mut_arg("buffer_size", |a| a.default_value("256M")))]
pub struct S3GatewayArgs {
    /// Address to serve S3 on (HTTP; put a TLS proxy in front to serve beyond the host).
    #[arg(long, default_value = "127.0.0.1:7480")]
    pub listen: SocketAddr,
    /// File holding a Strata token whose key pair the gateway accepts; repeat for several
    /// tokens.
    #[arg(long = "token-file", value_name = "FILE", required = true, help_heading = "Server and token")]
    pub token_files: Vec<PathBuf>,
    /// Largest body of one PUT or one multipart part (S3's own limit is 5G); larger requests
    /// are refused with EntityTooLarge.
    #[arg(long, default_value = "5G", value_parser = parse_size)]
    pub max_object_size: u64,
    /// Multipart uploads untouched this long are removed with their parts (their parts count
    /// against the volume's quota until then): in attached volumes in the background, and in
    /// any volume when an upload is started or listed there.
    #[arg(long, default_value = "7d", value_parser = parse_ttl)]
    pub multipart_expiry: Duration,
    /// Capacity of a volume made by CreateBucket (in the signing token's scope, with its
    /// policies' class). 0: none, unless the scope's policy sets a maximum volume size, which
    /// the volume then gets; a scope with a total quota refuses a bucket without one.
    #[arg(long, default_value = "0", value_parser = parse_size)]
    pub bucket_capacity: u64,
    /// Region the gateway names in its answers and expects in signatures' scope.
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
    /// Detach a volume from a token's session after it was unused this long (0: never). An
    /// attached volume counts as mounted: `strata volume delete` refuses it until then.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub detach_idle: Duration,
    /// Serve a snapshot or a data volume (read-only) as a bucket: `BUCKET=VOLUME@SNAPSHOT` or
    /// `BUCKET=dv:NAME[@VERSION]` (the latest version at attach time when none is named).
    /// Repeatable. Access is the token's, as for any bucket.
    #[arg(long = "bucket", value_name = "BUCKET=VIEW", value_parser = parse_alias)]
    pub aliases: Vec<(String, String)>,
    /// Log as JSON lines (the same as `--log-format json`).
    #[arg(long, hide = true)]
    pub log_json: bool,
    /// Log format: `text` (one line per event) or `json` (one object per line, for log
    /// shippers).
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: crate::util::LogFormat,
    // Last: their help headings would carry over to the options after them. Caches and
    // buffers are per attached volume and token.
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub server: ServerArgs,
}

impl S3GatewayArgs {
    fn secrets(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for f in &self.token_files {
            let t = std::fs::read_to_string(f).with_context(|| format!("cannot read token file {}", f.display()))?;
            let t = t.trim();
            if t.is_empty() {
                bail!("token file {} is empty", f.display());
            }
            out.push(t.to_string());
        }
        Ok(out)
    }
}

/// Parses `BUCKET=VIEW` of `--bucket`.
fn parse_alias(s: &str) -> Result<(String, String), String> {
    let (bucket, view) = s.split_once('=').ok_or("expected BUCKET=VOLUME@SNAPSHOT or BUCKET=dv:NAME[@VERSION]")?;
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    if bucket.len() < 3 || bucket.len() > 63 || !bucket.chars().all(ok) {
        return Err(format!("{bucket:?} is not a valid bucket name (3 to 63 of a-z, 0-9, '-', '.')"));
    }
    if !(view.starts_with("dv:") || view.contains('@')) {
        return Err(format!("{view:?} is neither VOLUME@SNAPSHOT nor dv:NAME[@VERSION]"));
    }
    Ok((bucket.to_string(), view.to_string()))
}

/// Runs `strata gateway s3` until SIGTERM or SIGINT.
pub fn run(args: S3GatewayArgs) -> Result<()> {
    let keys = Arc::new(Keyring::new(args.secrets()?));
    crate::util::init_logging(args.log_json || args.log_format == crate::util::LogFormat::Json);
    let rt = crate::runtime()?;
    rt.block_on(async {
        let stop = crate::cmd::server::shutdown_signal();
        strata_s3::metrics::register();
        args.client.metrics.start().await?;
        let att = Arc::new(Attachments::new(ServerConfig {
            server: args.server.server.clone(),
            vfs: args.client.vfs_config(true),
            client_name: format!("{}:s3-gateway:{}", strata_vfs::host_name(), args.listen),
            aliases: args.aliases.iter().cloned().collect(),
        }));
        if !args.detach_idle.is_zero() {
            att.spawn_reaper(args.detach_idle);
        }
        att.spawn_upload_expiry(args.multipart_expiry);
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let limits = Limits {
            max_object: args.max_object_size,
            multipart_expiry: args.multipart_expiry,
            bucket_capacity: args.bucket_capacity,
        };
        let svc = strata_s3::service(keys.clone(), att.clone(), limits, args.region.clone());
        tracing::info!(listen = %args.listen, server = %args.server.server, access_keys = ?keys.ids(), "S3 gateway serving");
        strata_s3::serve(listener, svc, stop).await;
        tracing::info!("stopping: committing writes and detaching volumes");
        att.close_all(args.client.retry_timeout + Duration::from_secs(15)).await;
        tracing::info!("S3 gateway stopped");
        Ok(())
    })
}
