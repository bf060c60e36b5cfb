//! Keeps this server's record in the metadata store (`strata_meta::servers`) fresh, so that
//! `strata status` lists every server of a shared database with its last report.

use std::sync::Arc;
use std::time::Duration;

use crate::state::State;

/// How often a server reports; a record older than [`SILENT_AFTER`] is a server gone quiet.
pub const REPORT_EVERY: Duration = Duration::from_secs(5);
/// See [`REPORT_EVERY`].
pub const SILENT_AFTER: Duration = Duration::from_secs(20);

/// Reports every [`REPORT_EVERY`] until aborted.
pub async fn run(st: Arc<State>) {
    loop {
        let (meta, addr, started) = (st.meta.clone(), st.server_id.clone(), st.started);
        let res =
            tokio::task::spawn_blocking(move || meta.report_server(&addr, env!("CARGO_PKG_VERSION"), started)).await;
        match res {
            Ok(Err(e)) => tracing::warn!(error = %e, "recording this server in the metadata store failed"),
            Err(e) => tracing::warn!(error = %e, "server report task failed"),
            Ok(Ok(())) => {
                st.first_report.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert_with(std::time::Instant::now);
            }
        }
        tokio::time::sleep(REPORT_EVERY).await;
    }
}

/// Removes this server's record (a clean stop).
pub async fn forget(st: &Arc<State>) {
    let (meta, addr) = (st.meta.clone(), st.server_id.clone());
    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || meta.forget_server(&addr)).await {
        tracing::debug!(error = %e, "removing this server's record failed");
    }
}
