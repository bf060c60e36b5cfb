//! `strata server`: run the metadata service and control plane.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use strata_server::{GcConfig, Server, ServerConfig};

use crate::util::parse_duration;

/// Run the metadata server (embedded SQLite metadata and local blocks in --data).
#[derive(clap::Args, Debug)]
pub struct ServerArgs {
    /// Directory for the metadata database (meta.db), blocks (blocks/) and the admin token
    /// (admin.token, created on first start with mode 0600).
    #[arg(long, env = "STRATA_DATA", value_name = "DIR")]
    pub data: PathBuf,
    /// Metadata store: `sqlite:///path/meta.db` (default: DATA_DIR/meta.db) or
    /// `postgres://user:password@host:port/database` (several servers may share one database).
    #[arg(long, env = "STRATA_META", value_name = "URL")]
    pub meta: Option<String>,
    /// Address to serve gRPC on. The default accepts local clients only; use 0.0.0.0:7420 to
    /// serve a cluster.
    #[arg(long, default_value = "127.0.0.1:7420")]
    pub listen: SocketAddr,
    /// A client that sends no heartbeat for this long is dropped: its locks and open files are
    /// released.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub session_timeout: Duration,
    /// Pause between background rounds (block collection, session expiry).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub gc_interval: Duration,
    /// How long the small blocks of durable commits (an NFS COMMIT or fsync of a small file)
    /// may stay only in the metadata store, where the commit made them durable, before the
    /// server writes their block files; blocks of files deleted sooner are never written.
    /// Readers on other hosts get them from the server meanwhile.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub journal_delay: Duration,
    /// After a start, how long clients get to re-announce files they hold open before unlinked
    /// files are destroyed.
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    pub orphan_grace: Duration,
    /// Pause between sweeps for blocks that no file references (uploaded by clients that
    /// crashed before committing them).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub sweep_interval: Duration,
    /// Unreferenced blocks younger than this are left alone (their client may still commit).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub orphan_block_age: Duration,
    /// Saved record versions a snapshot's deletion handles per transaction (smaller: shorter
    /// transactions, more of them).
    #[arg(long, default_value_t = strata_meta_batch(), hide = true)]
    pub snapshot_delete_batch: usize,
    /// Pause between a snapshot deletion's transactions (for tests that catch one midway).
    #[arg(long, default_value = "0s", value_parser = parse_duration, hide = true)]
    pub snapshot_delete_pause: Duration,
    /// On PostgreSQL, opens of files are not written to the database while this server hears
    /// the other servers' notes; an unlinked file, or data overwritten through another server,
    /// is destroyed this long after its change, once every server holding it open has recorded
    /// that. Below 8s the death of a server holding files open may be noticed too late. `0s`
    /// writes every open and destroys at once.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub open_grace: Duration,
    /// Keep open files, sessions and advisory locks in the metadata store instead of this
    /// process's memory (always so with PostgreSQL, where several servers may share the
    /// database and clients may fail over between them).
    #[arg(long)]
    pub shared_state: bool,
    /// Log as JSON lines (the same as `--log-format json`).
    #[arg(long, hide = true)]
    pub log_json: bool,
    /// Log format: `text` (one line per event) or `json` (one object per line, for log
    /// shippers).
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: crate::util::LogFormat,
}

fn strata_meta_batch() -> usize {
    strata_server::default_gc().snapshot_delete_batch
}

impl ServerArgs {
    /// The server configuration these flags describe.
    pub fn config(&self) -> ServerConfig {
        ServerConfig {
            data_dir: self.data.clone(),
            meta_url: self.meta.clone(),
            listen: self.listen,
            gc: GcConfig {
                interval: self.gc_interval,
                session_timeout: self.session_timeout,
                orphan_grace: self.orphan_grace,
                sweep_interval: self.sweep_interval,
                orphan_block_age: self.orphan_block_age,
                journal_delay: self.journal_delay,
                snapshot_delete_batch: self.snapshot_delete_batch.max(1),
                snapshot_delete_pause: self.snapshot_delete_pause,
                open_grace: self.open_grace,
            },
            shared_state: self.shared_state,
        }
    }
}

/// Waits for SIGINT or SIGTERM.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    // Registered now, not when first awaited: a signal that comes while the command is still
    // starting (attaching volumes, say) stops it cleanly once it is up, instead of killing it.
    let handlers = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()));
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            // Without signal handlers the process still stops on the default action.
            std::future::pending::<()>().await;
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
}

/// Runs the server until a signal stops it.
pub fn run(args: ServerArgs) -> Result<()> {
    crate::util::init_logging(args.log_json || args.log_format == crate::util::LogFormat::Json);
    let rt = crate::runtime()?;
    rt.block_on(async {
        let stop = shutdown_signal();
        let server = Server::bind(&args.config()).await.context("cannot start strata server")?;
        server.serve(stop).await.context("strata server failed")?;
        tracing::info!("strata server stopped");
        Ok(())
    })
}
