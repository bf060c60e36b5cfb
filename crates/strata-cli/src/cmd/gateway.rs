//! `strata gateway`: serve volumes over other protocols than FUSE.

use anyhow::Result;

/// Serve volumes over NFS or S3.
#[derive(clap::Args, Debug)]
pub struct GatewayArgs {
    #[command(subcommand)]
    cmd: GatewayCmd,
}

#[derive(clap::Subcommand, Debug)]
enum GatewayCmd {
    // No doc comment: the help (with the credential mapping) comes from `S3GatewayArgs`.
    S3(crate::cmd::gateway_s3::S3GatewayArgs),
}

/// Runs `strata gateway`.
pub fn run(args: GatewayArgs) -> Result<()> {
    match args.cmd {
        GatewayCmd::S3(a) => crate::cmd::gateway_s3::run(a),
    }
}
