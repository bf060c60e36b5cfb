//! The operations routes of the REST API (cluster admins only), each answered with a stream
//! of JSON lines: `GET /v1/admin/dump` (a consistent backup of the whole metadata store,
//! `strata dump`), `POST /v1/admin/fsck` and `POST /v1/admin/gc` (their reports, a line per
//! problem as found and a summary last: `crate::fsck`). `POST /v1/paths/info` and
//! `POST /v1/paths/summary` (`strata info`, `strata summary`: `crate::inspect`) answer
//! anyone whose token sees the volume.

use axum::Router;
use axum::body::Body as HttpBody;
use axum::extract::State as AxState;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use strata_meta::MetaError;
use strata_meta::control::CLUSTER;
use strata_meta::tokens::{Role, TokenRecord};

use super::model::ErrorBody;
use super::{Api, ApiError, ApiResult, Body, Caller};
use crate::control::ControlError;
use crate::fsck::{FsckRequest, GcRequest, ReportLine};
use crate::inspect::{InfoView, PathRequest, SummaryView};

/// Bytes of a dump gathered before they are handed to the connection.
const DUMP_CHUNK: usize = 256 << 10;
/// Chunks a dump may run ahead of a slow reader: what bounds its memory.
const DUMP_AHEAD: usize = 8;

/// The operations routes, merged into the REST router.
pub(super) fn routes() -> Router<Api> {
    Router::new()
        .route("/v1/admin/dump", get(dump))
        .route("/v1/admin/fsck", post(fsck))
        .route("/v1/admin/gc", post(gc))
        .route("/v1/paths/info", post(info))
        .route("/v1/paths/summary", post(summary))
}

/// Refuses anyone but a cluster admin.
fn cluster_admin(who: &TokenRecord, what: &str) -> Result<(), ControlError> {
    if who.role == Role::Admin && who.scope == CLUSTER {
        Ok(())
    } else {
        Err(ControlError::Forbidden(format!("only a cluster admin token may {what}")))
    }
}

/// Streams every metadata record, as one point in time, as JSON lines (see `strata_meta::dump`).
/// The status is sent once the snapshot is taken, so a store that cannot be read is an error
/// answer; a failure later cuts the body short, before the trailer.
#[utoipa::path(get, path = "/v1/admin/dump", tag = "operations",
    responses(
        (status = 200, description = "The dump: JSON lines, a header, one line per record, a trailer (README: Backup, restore and migration)", content_type = "application/x-ndjson", body = String),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not a cluster admin", body = ErrorBody),
    ))]
async fn dump(AxState(api): AxState<Api>, Caller(who): Caller) -> ApiResult<Response> {
    cluster_admin(&who, "dump the metadata")?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Bytes, MetaError>>(DUMP_AHEAD);
    let meta = api.st.meta.clone();
    tokio::task::spawn_blocking(move || {
        let mut buf = Vec::with_capacity(DUMP_CHUNK);
        let gone = || MetaError::Engine("the client stopped reading the dump".into());
        let res = meta.dump(&mut |b| {
            buf.extend_from_slice(b);
            if buf.len() >= DUMP_CHUNK {
                tx.blocking_send(Ok(Bytes::from(std::mem::take(&mut buf)))).map_err(|_| gone())?;
            }
            Ok(())
        });
        let res = res.and_then(|stats| {
            tx.blocking_send(Ok(Bytes::from(buf))).map_err(|_| gone())?;
            Ok(stats)
        });
        match res {
            Ok(stats) => tracing::info!(records = stats.records, bytes = stats.bytes, "metadata dumped"),
            // Nobody to tell: the client left.
            Err(e) if tx.is_closed() => tracing::info!(error = %e, "metadata dump ended early"),
            Err(e) => {
                tracing::warn!(error = %e, "metadata dump ended early");
                let _ = tx.blocking_send(Err(e));
            }
        }
    });
    let first = match rx.recv().await {
        Some(Ok(b)) => b,
        Some(Err(e)) => return Err(ControlError::from(e).into()),
        None => return Err(ApiError::from(ControlError::Internal("the dump task ended".into()))),
    };
    let rest = futures::stream::unfold(rx, |mut rx| async move {
        let item = rx.recv().await?;
        Some((item.map_err(std::io::Error::other), rx))
    });
    let body = futures::stream::once(async move { Ok::<_, std::io::Error>(first) });
    let body = HttpBody::from_stream(futures::StreamExt::chain(body, rest));
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

/// Report lines a check may run ahead of a slow reader.
const REPORT_AHEAD: usize = 64;

/// A report's lines as a streamed body of JSON lines.
fn report_body(rx: tokio::sync::mpsc::Receiver<ReportLine>) -> Response {
    let lines = futures::stream::unfold(rx, |mut rx| async move {
        let line = rx.recv().await?;
        let mut b = serde_json::to_vec(&line).unwrap_or_else(|e| {
            format!("{{\"type\":\"error\",\"message\":\"cannot encode a report line: {e}\"}}").into_bytes()
        });
        b.push(b'\n');
        Some((Ok::<_, std::io::Error>(Bytes::from(b)), rx))
    });
    ([(header::CONTENT_TYPE, "application/x-ndjson")], HttpBody::from_stream(lines)).into_response()
}

/// Checks the namespace and the block stores (`strata fsck`), repairing what is safe when
/// asked; the report streams as it is found.
#[utoipa::path(post, path = "/v1/admin/fsck", tag = "operations", request_body = FsckRequest,
    responses(
        (status = 200, description = "The report: one JSON line (a ReportLine) per problem as found, the summary last", content_type = "application/x-ndjson", body = ReportLine),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not a cluster admin", body = ErrorBody),
    ))]
async fn fsck(AxState(api): AxState<Api>, Caller(who): Caller, Body(req): Body<FsckRequest>) -> ApiResult<Response> {
    cluster_admin(&who, "check the file system")?;
    let (tx, rx) = tokio::sync::mpsc::channel(REPORT_AHEAD);
    let st = api.st.clone();
    tokio::spawn(async move { crate::fsck::fsck(&st, req, tx).await });
    Ok(report_body(rx))
}

/// Reports (and, when asked, deletes) leaked blocks and pending slices (`strata gc`).
#[utoipa::path(post, path = "/v1/admin/gc", tag = "operations", request_body = GcRequest,
    responses(
        (status = 200, description = "The report: one JSON line (a ReportLine) per leaked block, the summary last", content_type = "application/x-ndjson", body = ReportLine),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not a cluster admin", body = ErrorBody),
    ))]
async fn gc(AxState(api): AxState<Api>, Caller(who): Caller, Body(req): Body<GcRequest>) -> ApiResult<Response> {
    cluster_admin(&who, "collect garbage")?;
    let (tx, rx) = tokio::sync::mpsc::channel(REPORT_AHEAD);
    let st = api.st.clone();
    tokio::spawn(async move { crate::fsck::gc(&st, req, tx).await });
    Ok(report_body(rx))
}

/// Refuses a caller whose token does not see `volume` (as if it did not exist).
async fn sees_volume(api: &Api, who: &TokenRecord, volume: &str) -> Result<(), ApiError> {
    api.ctl.get_volume(who, volume).await.map(|_| ()).map_err(Into::into)
}

/// The inode at a path with its chunks, slices and blocks (`strata info`).
#[utoipa::path(post, path = "/v1/paths/info", tag = "operations", request_body = PathRequest,
    responses(
        (status = 200, description = "The inode", body = InfoView),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such volume (for this token) or path", body = ErrorBody),
    ))]
async fn info(
    AxState(api): AxState<Api>,
    Caller(who): Caller,
    Body(req): Body<PathRequest>,
) -> ApiResult<axum::Json<InfoView>> {
    sees_volume(&api, &who, &req.volume).await?;
    let path = req.path.clone();
    let v = crate::inspect::info(&api.st, req).await.map_err(|e| not_found_as_path(e, &path))?;
    Ok(axum::Json(v))
}

/// Sizes and counts of the tree at a path (`strata summary`).
#[utoipa::path(post, path = "/v1/paths/summary", tag = "operations", request_body = PathRequest,
    responses(
        (status = 200, description = "The tree", body = SummaryView),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such volume (for this token) or path", body = ErrorBody),
    ))]
async fn summary(
    AxState(api): AxState<Api>,
    Caller(who): Caller,
    Body(req): Body<PathRequest>,
) -> ApiResult<axum::Json<SummaryView>> {
    sees_volume(&api, &who, &req.volume).await?;
    let path = req.path.clone();
    let v = crate::inspect::summary(&api.st, req).await.map_err(|e| not_found_as_path(e, &path))?;
    Ok(axum::Json(v))
}

fn not_found_as_path(e: MetaError, path: &str) -> ApiError {
    match e {
        MetaError::NotFound => ApiError::not_found(format!("no such file or directory: {path}")),
        MetaError::NotDir => ApiError::not_found(format!("not a directory on the way to {path}")),
        e => ControlError::from(e).into(),
    }
}
