//! `strata gateway`: serve volumes over other protocols than FUSE.

use anyhow::Result;

/// Serve volumes over NFS or S3.
#[derive(clap::Args, Debug)]
pub struct GatewayArgs {
    #[command(subcommand)]
    cmd: GatewayCmd,
}

// No doc comments on the variants: each gateway's help (export rules, the credential mapping)
// comes from its arguments' own documentation.
#[derive(clap::Subcommand, Debug)]
enum GatewayCmd {
    Nfs(crate::cmd::gateway_nfs::NfsGatewayArgs),
    S3(crate::cmd::gateway_s3::S3GatewayArgs),
}

/// Runs `strata gateway`.
pub fn run(args: GatewayArgs) -> Result<()> {
    match args.cmd {
        GatewayCmd::Nfs(a) => crate::cmd::gateway_nfs::run(a),
        GatewayCmd::S3(a) => crate::cmd::gateway_s3::run(a),
    }
}
