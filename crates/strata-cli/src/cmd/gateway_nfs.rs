//! `strata gateway nfs`: volumes served to NFSv3 clients.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use strata_nfs::{Attach, ExportSpec, Gateway};

use crate::client_args::AttachArgs;
use crate::util::parse_duration;

/// Serve volumes over NFSv3 (MOUNT, NFS and a portmapper answer, all on one TCP port).
///
/// Each --export names the path clients mount, the volume (and optionally a directory in it),
/// and its rules:
///
///   --export /datasets=ml-data:/train,ro,allow=10.0.0.0/8,allow=192.168.1.20,squash=root
///
/// Options: `ro` (changes fail with NFS3ERR_ROFS), `allow=CIDR` (repeatable; clients outside
/// every allow are refused at MOUNT and on every call; default: this host only),
/// `squash=root|all|none` (default root: uid 0 acts as the anonymous user), `anonuid=N`,
/// `anongid=N` (default 65534), `token-file=FILE` (the export reaches the server with that
/// token and has exactly its rights; default: the gateway's --token/--token-file).
///
/// Clients: `mount -t nfs -o vers=3,proto=tcp,port=PORT,mountport=PORT HOST:/datasets /mnt`,
/// or libnfs URLs `nfs://HOST/datasets/file?nfsport=PORT&mountport=PORT&version=3`.
/// Unstable writes are buffered and made durable by COMMIT; the write verifier changes at every
/// start, so clients resend what a crash lost. File handles survive restarts.
#[derive(clap::Args, Debug, Clone)]
pub struct NfsGatewayArgs {
    /// Address to serve NFS, MOUNT and the portmapper on.
    #[arg(long, default_value = "0.0.0.0:2049")]
    pub listen: SocketAddr,
    /// Also answer portmapper queries on this address (e.g. 0.0.0.0:111), for clients that
    /// look ports up there.
    #[arg(long, value_name = "ADDR")]
    pub portmap: Option<SocketAddr>,
    /// An export: PATH=VOLUME[:/DIR][,OPTION...] (repeatable; see above).
    #[arg(long = "export", required = true, value_name = "SPEC")]
    pub exports: Vec<ExportSpec>,
    /// Files unused this long are closed (their writes committed).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub idle_close: Duration,
    /// Connections served at once, per listening port; one more is closed when accepted.
    /// Each connection takes 8 threads (its calls run in parallel up to that).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Log as JSON lines (the same as `--log-format json`).
    #[arg(long, hide = true)]
    pub log_json: bool,
    /// Log format: `text` (one line per event) or `json` (one object per line, for log
    /// shippers).
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: crate::util::LogFormat,
    #[command(flatten)]
    pub attach: AttachArgs,
}

/// Runs the gateway until SIGINT or SIGTERM.
pub fn run(args: NfsGatewayArgs) -> Result<()> {
    let token = args.attach.token.resolve()?;
    // Every READ and WRITE allocates and frees buffers of up to 1 MiB. Above glibc's mmap
    // threshold each one is a fresh mapping: page faults and kernel zeroing per call, a fifth of
    // the CPU of a large copy. Keep them in the heap (freed memory above 64 MiB per arena is
    // still returned).
    // SAFETY: mallopt only sets allocator parameters; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 16 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
    crate::util::init_logging(args.log_json || args.log_format == crate::util::LogFormat::Json);
    let rt = crate::runtime()?;
    rt.block_on(serve(args, token))
}

async fn serve(args: NfsGatewayArgs, token: String) -> Result<()> {
    let stop = crate::cmd::server::shutdown_signal();
    strata_nfs::metrics::register();
    args.attach.client.metrics.start().await?;
    let listener = std::net::TcpListener::bind(args.listen)
        .with_context(|| format!("cannot listen on {} (in use, or a privileged port without root?)", args.listen))?;
    let port = listener.local_addr()?.port();
    let pm = match args.portmap {
        Some(a) => Some(std::net::TcpListener::bind(a).with_context(|| format!("cannot listen on {a}"))?),
        None => None,
    };
    let how = Attach { server: &args.attach.server.server, token: &token, vfs: args.attach.client.vfs_config(true) };
    let exports = strata_nfs::attach(args.exports.clone(), &how).await?;
    if exports.is_empty() {
        bail!("no exports");
    }
    let g = Gateway::new(exports, port, args.attach.client.attr_ttl);
    let sessions = strata_nfs::sessions(&g);
    tracing::info!(listen = %args.listen, port, exports = g.exports().len(), "NFS gateway serving");
    // Connections are served on plain threads (see `strata_nfs::serve`); they end with the
    // process.
    for (l, name) in std::iter::once((listener, "nfs-accept")).chain(pm.map(|p| (p, "portmap-accept"))) {
        let (g, rt) = (g.clone(), tokio::runtime::Handle::current());
        let max = args.max_connections as usize;
        std::thread::Builder::new().name(name.into()).spawn(move || {
            if let Err(e) = strata_nfs::serve(g, l, rt, max) {
                tracing::error!(error = %e, "the NFS listener failed");
            }
        })?;
    }
    let upkeep = {
        let g = g.clone();
        let idle = args.idle_close;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                g.close_idle(idle).await;
            }
        })
    };
    stop.await;
    tracing::info!("NFS gateway stopping: closing files and committing writes");
    upkeep.abort();
    let closed = g.close_idle(Duration::ZERO).await;
    let mut failed = false;
    for v in &sessions {
        if let Err(e) = v.detach().await {
            tracing::error!(error = %e, "ending the volume session failed");
            failed = true;
        }
    }
    tracing::info!(closed, "NFS gateway stopped");
    if failed {
        bail!("some buffered writes may not have been committed");
    }
    Ok(())
}
