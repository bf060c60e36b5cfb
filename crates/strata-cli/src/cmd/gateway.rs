//! `strata gateway`: volumes served over other protocols.

use anyhow::Result;

/// Serve volumes over NFS or S3.
#[derive(clap::Args, Debug)]
pub struct GatewayArgs {
    #[command(subcommand)]
    pub kind: GatewayKind,
}

/// The gateways.
#[derive(clap::Subcommand, Debug)]
pub enum GatewayKind {
    /// Serve volumes to NFSv3 clients.
    Nfs(crate::cmd::gateway_nfs::NfsGatewayArgs),
}

/// Runs a gateway.
pub fn run(args: GatewayArgs) -> Result<()> {
    match args.kind {
        GatewayKind::Nfs(a) => crate::cmd::gateway_nfs::run(a),
    }
}
