//! Offline operations on a metadata store that no server runs on: `strata load`. (The online
//! ones, dump, fsck and gc, are REST routes of a running server: `rest/ops.rs`.)

use std::io::BufRead;
use std::path::Path;

pub use strata_meta::dump::{DUMP_FORMAT, DUMP_VERSION, DumpHeader, DumpStats};

/// The metadata URL a server with data directory `data` and `--meta` `meta` uses.
pub fn meta_url(data: &Path, meta: Option<&str>) -> String {
    match meta {
        Some(u) => u.to_string(),
        None => format!("sqlite://{}", data.join("meta.db").display()),
    }
}

/// Loads a dump into the empty store at `url` (see `strata_meta::dump::load`). Runs the
/// engine on this thread: call it off any async runtime.
pub fn load(url: &str, input: &mut dyn BufRead) -> Result<DumpStats, strata_meta::MetaError> {
    strata_meta::dump::load(url, input)
}
