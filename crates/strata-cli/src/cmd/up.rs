//! `strata up`: a whole single-node deployment in one command, for trying Strata out.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use strata_server::rest::model::{NewVolume, VolumeView};
use strata_server::{Server, ServerConfig};

use crate::cmd::mount::MountArgs;

/// Start a server on the embedded default (SQLite metadata, blocks on local disk), create the
/// volume if needed and mount it. Ctrl-C unmounts and stops.
#[derive(clap::Args, Debug)]
pub struct UpArgs {
    /// Data directory of the server.
    #[arg(long, default_value = "./strata-data", value_name = "DIR")]
    pub data: PathBuf,
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:7420")]
    pub listen: SocketAddr,
    /// Volume to create (if missing) and mount.
    #[arg(long, default_value = "default")]
    pub volume: String,
    /// Where to mount it (created if missing).
    #[arg(long, default_value = "/tmp/strata/default")]
    pub mountpoint: PathBuf,
}

/// Mount settings at their defaults, parsed like `strata mount` would.
#[derive(Parser)]
struct MountDefaults {
    #[command(flatten)]
    m: MountArgs,
}

/// Runs `strata up`.
pub fn run(args: UpArgs) -> Result<()> {
    crate::util::init_logging(false);
    let rt = crate::runtime()?;
    rt.block_on(async {
        let cfg = ServerConfig {
            data_dir: args.data.clone(),
            meta_url: None,
            listen: args.listen,
            gc: strata_server::default_gc(),
            shared_state: false,
        };
        let server = Server::bind(&cfg).await.context("cannot start strata server")?;
        let addr = server.local_addr();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(server.serve(async {
            let _ = stop_rx.await;
        }));
        let data = std::fs::canonicalize(&args.data)?;
        let token_file = data.join(strata_server::ADMIN_TOKEN_FILE);
        let token = std::fs::read_to_string(&token_file)
            .with_context(|| format!("cannot read {}", token_file.display()))?
            .trim()
            .to_string();
        let api = crate::cmd::rest::Api::with_token(&addr.to_string(), token.clone());
        let req = NewVolume { name: args.volume.clone(), ..Default::default() };
        match api.post::<VolumeView>("/v1/volumes", &req).await {
            Ok(_) => tracing::info!(volume = %args.volume, "created volume"),
            Err(e) if crate::cmd::rest::is_status(&e, hyper::StatusCode::CONFLICT) => {}
            Err(e) => return Err(e.context("cannot create the volume")),
        }
        std::fs::create_dir_all(&args.mountpoint)
            .with_context(|| format!("cannot create mount point {}", args.mountpoint.display()))?;
        let exe = std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "strata".into());
        let margs = MountDefaults::try_parse_from([
            "mount",
            &args.volume,
            &args.mountpoint.display().to_string(),
            "--server",
            &addr.to_string(),
        ])?
        .m;
        println!("Strata is up.");
        println!("  server:  {addr}  (data in {}, admin token in {})", data.display(), token_file.display());
        println!("  volume:  {} mounted at {}", args.volume, args.mountpoint.display());
        println!("Mount the same volume from a second terminal (or another node, with --server):");
        println!(
            "  mkdir -p /tmp/strata/second && {exe} mount {} /tmp/strata/second --server {addr} --token-file {}",
            args.volume,
            token_file.display()
        );
        println!("Press Ctrl-C to unmount and stop.");
        let res = crate::cmd::mount::serve(&margs, &token, crate::cmd::server::shutdown_signal()).await;
        let _ = stop_tx.send(());
        match serving.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "server stopped with an error"),
            Err(e) => tracing::error!(error = %e, "server task failed"),
        }
        res
    })
}
