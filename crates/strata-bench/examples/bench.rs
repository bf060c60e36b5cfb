//! Stand-alone runner for the benchmark workloads (the same as `strata bench`; the training
//! workloads start their worker processes as copies of this program):
//!
//! ```text
//! cargo run --release -p strata-bench --example bench -- --dir /mnt/strata --json
//! ```

use clap::Parser;
use strata_bench::BenchArgs;

/// Runs the Strata file-level benchmark workloads on a directory.
#[derive(Parser)]
#[command(name = "strata-bench", version)]
struct Cli {
    #[command(flatten)]
    args: BenchArgs,
}

fn main() -> anyhow::Result<()> {
    strata_bench::run(Cli::parse().args)
}
