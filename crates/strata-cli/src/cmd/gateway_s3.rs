//! `strata gateway s3`: the S3-compatible gateway.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use strata_s3::{Attachments, Keyring, Limits, ServerConfig};
use strata_vfs::VfsConfig;

use crate::util::{ServerArgs, parse_duration, parse_size};

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
    /// Region the gateway names in its answers and expects in signatures' scope.
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
    /// Memory for cached blocks, per attached volume and token [default: the storage class's
    /// setting, else 512M].
    #[arg(long, value_parser = parse_size)]
    pub cache_size: Option<u64>,
    /// Memory for written data not yet uploaded, per attached volume and token; writers wait
    /// when it is full.
    #[arg(long, default_value = "256M", value_parser = parse_size)]
    pub buffer_size: u64,
    /// How long a request waits for an unreachable server before failing with
    /// ServiceUnavailable.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub retry_timeout: Duration,
    /// Detach a volume from a token's session after it was unused this long (0: never). An
    /// attached volume counts as mounted: `strata volume delete` refuses it until then.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub detach_idle: Duration,
    /// Log as JSON lines.
    #[arg(long)]
    pub log_json: bool,
    // Last: its help heading would carry over to the options after it.
    #[command(flatten)]
    pub server: ServerArgs,
}

impl S3GatewayArgs {
    fn vfs_config(&self) -> VfsConfig {
        VfsConfig {
            mem_cache: self.cache_size.unwrap_or(VfsConfig::DEFAULT_MEM_CACHE),
            mem_cache_explicit: self.cache_size.is_some(),
            buffer: self.buffer_size,
            ..VfsConfig::default()
        }
    }

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

/// Runs `strata gateway s3` until SIGTERM or SIGINT.
pub fn run(args: S3GatewayArgs) -> Result<()> {
    let keys = Arc::new(Keyring::new(args.secrets()?));
    crate::util::init_logging(args.log_json);
    let rt = crate::runtime()?;
    rt.block_on(async {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let att = Arc::new(Attachments::new(ServerConfig {
            server: args.server.server.clone(),
            vfs: args.vfs_config(),
            retry_timeout: args.retry_timeout,
            client_name: format!("{}:s3-gateway:{}", host.trim(), args.listen),
        }));
        if !args.detach_idle.is_zero() {
            att.spawn_reaper(args.detach_idle);
        }
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let limits = Limits { max_object: args.max_object_size };
        let svc = strata_s3::service(keys.clone(), att.clone(), limits, args.region.clone());
        tracing::info!(listen = %args.listen, server = %args.server.server, access_keys = ?keys.ids(), "S3 gateway serving");
        strata_s3::serve(listener, svc, crate::cmd::server::shutdown_signal()).await;
        tracing::info!("stopping: committing writes and detaching volumes");
        att.close_all(args.retry_timeout + Duration::from_secs(15)).await;
        tracing::info!("S3 gateway stopped");
        Ok(())
    })
}
