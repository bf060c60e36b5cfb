//! `GET /v1/stats` (counters the dashboard turns into rates) and the dashboard itself, `/ui`:
//! static files compiled into the binary, which ask for a token and call the REST API with it.

use axum::Json;
use axum::extract::State as AxState;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Api, ApiResult, Caller};

/// Counters of the volumes the caller sees (and, for cluster tokens, of the server): poll and
/// take differences for rates.
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug)]
pub struct StatsView {
    /// When these were read, seconds since the epoch.
    pub time: f64,
    /// RPCs served since the server started (cluster-scope tokens only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpc_calls: Option<u64>,
    /// Of those, answered with an error (cluster-scope tokens only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpc_errors: Option<u64>,
    /// Connected clients of the volumes the caller sees.
    pub sessions: u64,
    /// The volumes the caller sees.
    pub volumes: Vec<VolumeStats>,
}

/// One volume's counters.
#[derive(Serialize, Deserialize, ToSchema, Clone, Debug)]
pub struct VolumeStats {
    /// Volume name.
    pub name: String,
    /// Its scope.
    pub scope: String,
    /// Bytes charged.
    pub used_bytes: u64,
    /// Byte quota (0: none).
    pub capacity: u64,
    /// Inodes in use.
    pub used_inodes: u64,
    /// Inode quota (0: none).
    pub inode_limit: u64,
    /// Bytes committed by writes since the server started.
    pub written_bytes: u64,
}

/// Counters for live rates: bytes written per volume, RPCs served, connected clients.
#[utoipa::path(get, path = "/v1/stats", tag = "status",
    responses(
        (status = 200, description = "Counters", body = StatsView),
        (status = 401, description = "No valid token", body = super::ErrorBody),
    ))]
pub(super) async fn stats(AxState(api): AxState<Api>, Caller(who): Caller) -> ApiResult<Json<StatsView>> {
    let m = crate::metrics::get();
    let vols = api.ctl.list_volumes(&who).await?;
    let names: std::collections::HashSet<&str> = vols.iter().map(|v| v.volume.name.as_str()).collect();
    let sessions = api
        .st
        .sessions()
        .await
        .map_err(crate::control::ControlError::from)?
        .iter()
        .filter(|s| names.contains(s.volume_name.as_str()))
        .count() as u64;
    let volumes = vols
        .iter()
        .map(|v| VolumeStats {
            name: v.volume.name.clone(),
            scope: v.volume.scope.clone(),
            used_bytes: v.usage.bytes,
            capacity: v.volume.capacity,
            used_inodes: v.usage.inodes,
            inode_limit: v.volume.inode_limit,
            written_bytes: m.committed_of(v.volume.id),
        })
        .collect();
    let cluster = who.scope == strata_meta::control::CLUSTER;
    let (calls, errors) = m.rpc_totals();
    let time = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    Ok(Json(StatsView {
        time,
        rpc_calls: cluster.then_some(calls),
        rpc_errors: cluster.then_some(errors),
        sessions,
        volumes,
    }))
}

const INDEX: &str = include_str!("../../ui/index.html");
const APP: &str = include_str!("../../ui/app.js");
const STYLE: &str = include_str!("../../ui/style.css");

fn file(ctype: &'static str, body: &'static str) -> Response {
    // The dashboard sets no cookies and keeps its token in the tab's sessionStorage; framing it
    // elsewhere is refused.
    (
        [
            (header::CONTENT_TYPE, ctype),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::CONTENT_SECURITY_POLICY, "default-src 'self'; frame-ancestors 'none'"),
        ],
        body,
    )
        .into_response()
}

/// `/ui`: the dashboard's page.
pub(super) async fn index() -> Response {
    file("text/html; charset=utf-8", INDEX)
}

/// `/ui/app.js`.
pub(super) async fn app() -> Response {
    file("text/javascript; charset=utf-8", APP)
}

/// `/ui/style.css`.
pub(super) async fn style() -> Response {
    file("text/css; charset=utf-8", STYLE)
}
