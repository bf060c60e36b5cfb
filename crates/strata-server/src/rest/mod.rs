//! The control plane's REST API (axum), served on the server's one port: `accept()` hands it
//! connections that start with an HTTP/1 request line. Every handler calls [`Control`], so REST
//! applies exactly the rules of the other paths. The OpenAPI document is generated from the
//! handlers and the types in [`model`] (utoipa) and served at `/openapi.json`.
//!
//! Scope paths contain `/` (`ml/vision`): the routes that take one (`/v1/scopes/{path}`,
//! `/v1/policies/{scope}`) accept it written raw or percent-encoded (`ml%2Fvision`).

pub mod model;
mod ops;
pub mod stats;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, FromRef, FromRequest, FromRequestParts, Path, Request, State as AxState};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header, request::Parts};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use strata_meta::tokens::{Role, TokenRecord};
use utoipa::OpenApi;

use crate::control::{Control, ControlError, CreateDataVolume, CreateVolume};
use crate::state::State;
use model::*;

/// Largest request body accepted.
pub const MAX_BODY: usize = 1 << 20;

/// How long a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a client may take to send a request's body.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

// ---- errors ----

/// An error response: a status and the JSON body `{"error": {...}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    detail: ErrorDetail,
}

impl ApiError {
    fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError { status, detail: ErrorDetail { code: code.into(), message: message.into(), rule: None, scope: None } }
    }

    /// 400: the request is malformed.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid", message)
    }

    /// 401: no valid token.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::Forbidden(m) => Self::new(StatusCode::FORBIDDEN, "forbidden", m),
            ControlError::Policy { ref rule, ref scope, .. } => {
                let (rule, scope) = (rule.clone(), scope.clone());
                let mut a = Self::new(StatusCode::FORBIDDEN, "policy_denied", e.to_string());
                a.detail.rule = Some(rule);
                a.detail.scope = Some(scope);
                a
            }
            ControlError::NotFound(m) => Self::not_found(m),
            ControlError::Conflict(m) => Self::new(StatusCode::CONFLICT, "conflict", m),
            ControlError::Invalid(m) => Self::invalid(m),
            ControlError::Internal(m) => Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", m),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = %self.status, message = %self.detail.message, "REST request failed");
        } else {
            tracing::debug!(status = %self.status, message = %self.detail.message, "REST request refused");
        }
        let unauth = self.status == StatusCode::UNAUTHORIZED;
        let mut r = (self.status, Json(ErrorBody { error: self.detail })).into_response();
        if unauth {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"strata\""));
        }
        r
    }
}

type ApiResult<T> = Result<T, ApiError>;

// ---- extractors ----

/// The caller, authenticated by its `Authorization: Bearer <token>` header.
pub struct Caller(pub TokenRecord);

impl<S: Send + Sync> FromRequestParts<S> for Caller
where
    Control: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let ctl = Control::from_ref(state);
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthenticated("no token: send 'Authorization: Bearer <token>'"))?;
        let value = value.to_str().map_err(|_| ApiError::unauthenticated("malformed authorization header"))?;
        let (scheme, secret) = value.trim().split_once(' ').unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("bearer") || secret.trim().is_empty() {
            return Err(ApiError::unauthenticated("authorization must be 'Bearer <token>'"));
        }
        match ctl.authenticate(secret.trim()) {
            Ok(rec) => Ok(Caller(rec)),
            Err(s) if s.code() == tonic::Code::Unauthenticated => Err(ApiError::unauthenticated(s.message())),
            Err(s) => Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", s.message())),
        }
    }
}

/// A JSON request body: `Content-Type` must be JSON when given, the body at most [`MAX_BODY`],
/// and it must decode (unknown fields are refused).
pub struct Body<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or("").split(';').next().unwrap_or("").trim().to_ascii_lowercase();
            if ct != "application/json" && !(ct.starts_with("application/") && ct.ends_with("+json")) {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    format!("request bodies are JSON (Content-Type: application/json), not {ct:?}"),
                ));
            }
        }
        let too_large = || {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("request body is larger than {MAX_BODY} bytes"),
            )
        };
        let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_BODY as u64) {
            return Err(too_large());
        }
        let read = tokio::time::timeout(BODY_TIMEOUT, axum::body::Bytes::from_request(req, state));
        let bytes = read
            .await
            .map_err(|_| {
                ApiError::new(StatusCode::REQUEST_TIMEOUT, "request_timeout", "the request body did not arrive in time")
            })?
            .map_err(|r| {
                if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    too_large()
                } else {
                    ApiError::invalid(format!("cannot read the request body: {}", r.body_text()))
                }
            })?;
        let de = &mut serde_json::Deserializer::from_slice(&bytes);
        let value = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path.is_empty() || path == "." {
                ApiError::invalid(format!("invalid JSON body: {inner}"))
            } else {
                ApiError::invalid(format!("invalid JSON body: field {path}: {inner}"))
            }
        })?;
        Ok(Body(value))
    }
}

/// One path parameter (percent-decoded).
pub struct Param(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Param {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(p) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::invalid(format!("bad path parameter: {}", e.body_text())))?;
        Ok(Param(p))
    }
}

/// Two path parameters (percent-decoded).
pub struct Params2(pub String, pub String);

impl<S: Send + Sync> FromRequestParts<S> for Params2 {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path((a, b)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::invalid(format!("bad path parameter: {}", e.body_text())))?;
        Ok(Params2(a, b))
    }
}

fn unhex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Percent-decodes one path segment.
fn decode_segment(s: &str) -> ApiResult<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = b.get(i + 1).copied().and_then(unhex);
            let l = b.get(i + 2).copied().and_then(unhex);
            match (h, l) {
                (Some(h), Some(l)) => out.push(h << 4 | l),
                _ => return Err(ApiError::invalid("malformed percent-encoding in the path")),
            }
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ApiError::invalid("the path is not UTF-8"))
}

/// The decoded segments of the request path after `prefix` (raw `/` separates segments; `%2F`
/// stays inside one).
fn tail_segments(uri: &Uri, prefix: &str) -> ApiResult<Vec<String>> {
    let rest = uri.path().strip_prefix(prefix).unwrap_or("");
    if rest.is_empty() {
        return Err(ApiError::not_found("no such route"));
    }
    rest.split('/').map(decode_segment).collect()
}

/// A scope path from the segments of a route's tail.
fn scope_of(segs: &[String]) -> ApiResult<String> {
    if segs.is_empty() || segs.iter().any(|s| s.is_empty()) {
        return Err(ApiError::invalid("empty scope path or part of one"));
    }
    Ok(segs.join("/"))
}

// ---- the OpenAPI document ----

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Strata control plane",
        description = "Storage classes, volumes, snapshots, data volumes, scopes, tokens and policies of a Strata cluster. \
            Every call except this document needs `Authorization: Bearer <token>`. Errors are \
            `{\"error\": {\"code\", \"message\", \"rule\"?, \"scope\"?}}`. Scope paths contain `/` \
            (`DEPT/PROJECT`): write it raw or as `%2F` in URLs.",
        license(name = "Apache-2.0")
    ),
    paths(
        list_classes, create_class, get_class, update_class, delete_class,
        list_volumes, create_volume, get_volume, resize_volume, delete_volume, set_volume_qos, clear_volume_qos,
        list_snapshots, create_snapshot, get_snapshot, delete_snapshot,
        list_datavolumes, create_datavolume, get_datavolume, delete_datavolume, update_datavolume,
        delete_datavolume_version, share_datavolume, unshare_datavolume,
        list_scopes, create_scope, delete_scope,
        list_tokens, create_token, revoke_token,
        get_policy, set_policy, effective_policy,
        status, stats::stats,
        ops::dump, ops::fsck, ops::gc, ops::info, ops::summary,
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "storageclasses", description = "Tiers volumes are provisioned in (cluster admins change them)"),
        (name = "volumes", description = "Top-level namespaces with their own root, quota and class"),
        (name = "snapshots", description = "Read-only, point-in-time views of a volume (mount `VOLUME@SNAPSHOT`)"),
        (name = "datavolumes", description = "Named, versioned, read-only datasets owned by a scope and shared with others (mount `dv:NAME[@VERSION]`)"),
        (name = "scopes", description = "The cluster, its departments and their projects"),
        (name = "tokens", description = "Access tokens: a role in a scope"),
        (name = "policies", description = "Provisioning rules of a scope"),
        (name = "status", description = "What the server is doing"),
        (name = "operations", description = "Backup (dump), checks and repairs (fsck), garbage (gc), what a path is made of (info, summary)"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let comps = openapi.components.get_or_insert_with(Default::default);
        comps.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A Strata token (`strata token create`, or DATA_DIR/admin.token)"))
                    .build(),
            ),
        );
    }
}

/// The OpenAPI document (JSON), built once.
pub fn openapi_json() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| ApiDoc::openapi().to_json().unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")))
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], openapi_json()).into_response()
}

// ---- storage classes ----

/// List storage classes.
#[utoipa::path(get, path = "/v1/storageclasses", tag = "storageclasses",
    responses(
        (status = 200, description = "Every class", body = Vec<ClassView>),
        (status = 401, description = "No valid token", body = ErrorBody),
    ))]
async fn list_classes(AxState(ctl): AxState<Control>, Caller(who): Caller) -> ApiResult<Json<Vec<ClassView>>> {
    Ok(Json(ctl.list_classes(&who).await?.into_iter().map(Into::into).collect()))
}

/// Create a storage class (cluster admins).
#[utoipa::path(post, path = "/v1/storageclasses", tag = "storageclasses", request_body = NewClass,
    responses(
        (status = 201, description = "Created", body = ClassView),
        (status = 400, description = "Invalid class", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not a cluster admin", body = ErrorBody),
        (status = 409, description = "A class of that name exists", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
    ))]
async fn create_class(
    AxState(ctl): AxState<Control>,
    Caller(who): Caller,
    Body(req): Body<NewClass>,
) -> ApiResult<(StatusCode, Json<ClassView>)> {
    let (name, settings) = req.split();
    check_description(&settings.description)?;
    let c = ctl.create_class(&who, settings.into_class(name)).await?;
    Ok((StatusCode::CREATED, Json(c.into())))
}

/// Describe a storage class.
#[utoipa::path(get, path = "/v1/storageclasses/{name}", tag = "storageclasses",
    params(("name" = String, Path, description = "Class name")),
    responses(
        (status = 200, description = "The class", body = ClassView),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such class", body = ErrorBody),
    ))]
async fn get_class(
    AxState(ctl): AxState<Control>,
    Caller(who): Caller,
    Param(name): Param,
) -> ApiResult<Json<ClassView>> {
    Ok(Json(ctl.get_class(&who, &name).await?.into()))
}

/// Replace a storage class's settings (cluster admins). Existing volumes keep their block size
/// and compression; limits and cache defaults apply at their next mount.
#[utoipa::path(put, path = "/v1/storageclasses/{name}", tag = "storageclasses", request_body = ClassSettings,
    params(("name" = String, Path, description = "Class name")),
    responses(
        (status = 200, description = "Updated", body = ClassView),
        (status = 400, description = "Invalid settings", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not a cluster admin", body = ErrorBody),
        (status = 404, description = "No such class", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
    ))]
async fn update_class(
    AxState(ctl): AxState<Control>,
    Caller(who): Caller,
    Param(name): Param,
    Body(req): Body<ClassSettings>,
) -> ApiResult<Json<ClassView>> {
    check_description(&req.description)?;
    Ok(Json(ctl.update_class(&who, req.into_class(name)).await?.into()))
}

/// Delete a storage class no volume uses and that is not the default (cluster admins).
#[utoipa::path(delete, path = "/v1/storageclasses/{name}", tag = "storageclasses",
    params(("name" = String, Path, description = "Class name")),
    responses(
        (status = 200, description = "Deleted; the class as it was", body = ClassView),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not a cluster admin", body = ErrorBody),
        (status = 404, description = "No such class", body = ErrorBody),
        (status = 409, description = "In use, or the default class", body = ErrorBody),
    ))]
async fn delete_class(
    AxState(ctl): AxState<Control>,
    Caller(who): Caller,
    Param(name): Param,
) -> ApiResult<Json<ClassView>> {
    Ok(Json(ctl.delete_class(&who, &name).await?.into()))
}

fn check_description(d: &str) -> ApiResult<()> {
    if d.chars().count() > MAX_DESCRIPTION {
        return Err(ApiError::invalid(format!("descriptions are at most {MAX_DESCRIPTION} characters")));
    }
    Ok(())
}

// ---- volumes ----

/// List the volumes of the caller's scope and below.
#[utoipa::path(get, path = "/v1/volumes", tag = "volumes",
    responses(
        (status = 200, description = "Volumes with their use", body = Vec<VolumeView>),
        (status = 401, description = "No valid token", body = ErrorBody),
    ))]
async fn list_volumes(AxState(ctl): AxState<Control>, Caller(who): Caller) -> ApiResult<Json<Vec<VolumeView>>> {
    let v = ctl.list_volumes(&who).await?;
    Ok(Json(v.into_iter().map(|v| VolumeView::with_qos(v.volume, v.usage, v.qos)).collect()))
}

/// Create a volume (admins and editors), if the policies of its scope allow it; with `from`, a
/// clone of a volume (or of one of its snapshots) the caller sees, sharing its blocks.
#[utoipa::path(post, path = "/v1/volumes", tag = "volumes", request_body = NewVolume,
    responses(
        (status = 201, description = "Created", body = VolumeView),
        (status = 400, description = "Invalid request; for a clone: a class in another store, or a quota too small for the source", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not allowed to the token, or refused by a policy (`rule`, `scope`)", body = ErrorBody),
        (status = 404, description = "No such class or scope, or no such clone source the caller may see", body = ErrorBody),
        (status = 409, description = "A volume of that name exists, or the source is still being cloned", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
    ))]
async fn create_volume(
    AxState(ctl): AxState<Control>,
    Caller(who): Caller,
    Body(req): Body<NewVolume>,
) -> ApiResult<(StatusCode, Json<VolumeView>)> {
    check_bytes("capacity", req.capacity)?;
    if req.inodes > MAX_INODES {
        return Err(ApiError::invalid(format!("inodes {} is more than the largest allowed, {MAX_INODES}", req.inodes)));
    }
    let v = ctl
        .create_volume(
            &who,
            CreateVolume {
                name: req.name,
                scope: req.scope,
                class: req.class,
                capacity: req.capacity,
                inodes: req.inodes,
                access_mode: req.access_mode.map(|m| m.as_str().to_string()),
                reclaim: req.reclaim.map(|r| r.as_str().to_string()),
                from: req.from,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(VolumeView::with_qos(v.volume, v.usage, v.qos))))
}

fn check_bytes(what: &str, n: u64) -> ApiResult<()> {
    if n > MAX_BYTES {
        return Err(ApiError::invalid(format!(
            "{what} {n} is more than the largest allowed, {MAX_BYTES} bytes (1 EiB)"
        )));
    }
    Ok(())
}

/// Describe a volume of the caller's scope or below.
#[utoipa::path(get, path = "/v1/volumes/{name}", tag = "volumes",
    params(("name" = String, Path, description = "Volume name")),
    responses(
        (status = 200, description = "The volume with its use", body = VolumeView),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such volume the caller may see", body = ErrorBody),
    ))]
async fn get_volume(
    AxState(ctl): AxState<Control>,
    Caller(who): Caller,
    Param(name): Param,
) -> ApiResult<Json<VolumeView>> {
    let v = ctl.get_volume(&who, &name).await?;
    Ok(Json(VolumeView::with_qos(v.volume, v.usage, v.qos)))
}

/// Expand or shrink a volume (admins and editors).
#[utoipa::path(patch, path = "/v1/volumes/{name}", tag = "volumes", request_body = VolumePatch,
    params(("name" = String, Path, description = "Volume name")),
    responses(
        (status = 200, description = "Resized", body = VolumeView),
        (status = 400, description = "Below the bytes in use, or the class does not allow growth", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not allowed to the token, or refused by a policy", body = ErrorBody),
        (status = 404, description = "No such volume the caller may see", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
    ))]
async fn resize_volume(
    AxState(ctl): AxState<Control>,
    Caller(who): Caller,
    Param(name): Param,
    Body(req): Body<VolumePatch>,
) -> ApiResult<Json<VolumeView>> {
    check_bytes("capacity", req.capacity)?;
    let v = ctl.resize_volume(&who, &name, req.capacity).await?;
    Ok(Json(VolumeView::with_qos(v.volume, v.usage, v.qos)))
}

/// Set a volume's own QoS limits per mount (admins and editors), replacing its class's; 0 means
/// unlimited. Mounted clients take the change up within seconds (with their next heartbeat).
#[utoipa::path(put, path = "/v1/volumes/{name}/qos", tag = "volumes", request_body = QosSpec,
    params(("name" = String, Path, description = "Volume name")),
    responses(
        (status = 200, description = "Set; the volume with its QoS", body = VolumeView),
        (status = 400, description = "Invalid limits", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not allowed to the token", body = ErrorBody),
        (status = 404, description = "No such volume the caller may see", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
    ))]
async fn set_volume_qos(
    AxState(ctl): AxState<Control>,
    Caller(who): Caller,
    Param(name): Param,
    Body(req): Body<QosSpec>,
) -> ApiResult<Json<VolumeView>> {
    let v = ctl.set_volume_qos(&who, &name, Some((req.bytes_per_sec, req.ops_per_sec))).await?;
    Ok(Json(VolumeView::with_qos(v.volume, v.usage, v.qos)))
}

/// Clear a volume's own QoS limits (admins and editors): its class's apply again.
#[utoipa::path(delete, path = "/v1/volumes/{name}/qos", tag = "volumes",
    params(("name" = String, Path, description = "Volume name")),
    responses(
        (status = 200, description = "Cleared; the volume", body = VolumeView),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not allowed to the token", body = ErrorBody),
        (status = 404, description = "No such volume the caller may see", body = ErrorBody),
    ))]
async fn clear_volume_qos(
    AxState(ctl): AxState<Control>,
    Caller(who): Caller,
    Param(name): Param,
) -> ApiResult<Json<VolumeView>> {
    let v = ctl.set_volume_qos(&who, &name, None).await?;
    Ok(Json(VolumeView::with_qos(v.volume, v.usage, v.qos)))
}

/// Delete a volume nobody has mounted (admins and editors); its reclaim policy decides what
/// happens to its data.
#[utoipa::path(delete, path = "/v1/volumes/{name}", tag = "volumes",
    params(("name" = String, Path, description = "Volume name")),
    responses(
        (status = 200, description = "Deleted; the volume as it was", body = VolumeView),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not allowed to the token", body = ErrorBody),
        (status = 404, description = "No such volume the caller may see", body = ErrorBody),
        (status = 409, description = "Mounted", body = ErrorBody),
    ))]
async fn delete_volume(
    AxState(ctl): AxState<Control>,
    Caller(who): Caller,
    Param(name): Param,
) -> ApiResult<Json<VolumeView>> {
    let v = ctl.delete_volume(&who, &name).await?;
    Ok(Json(VolumeView::new(v, Default::default())))
}

// ---- snapshots ----

/// List a volume's snapshots, oldest first, with the bytes each shares and holds alone.
#[utoipa::path(get, path = "/v1/volumes/{name}/snapshots", tag = "snapshots",
    params(("name" = String, Path, description = "Volume name")),
    responses(
        (status = 200, description = "Snapshots (those owned by data volumes or clones name their owner)", body = Vec<SnapshotView>),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such volume the caller may see", body = ErrorBody),
    ))]
async fn list_snapshots(
    AxState(ctl): AxState<Control>,
    Caller(who): Caller,
    Param(name): Param,
) -> ApiResult<Json<Vec<SnapshotView>>> {
    Ok(Json(ctl.list_snapshots(&who, &name).await?.into_iter().map(Into::into).collect()))
}

/// Take a snapshot of a volume (admins and editors of its scope): one record, whatever the
/// volume holds. Mount it read-only as `VOLUME@SNAPSHOT`.
#[utoipa::path(post, path = "/v1/volumes/{name}/snapshots", tag = "snapshots", request_body = NewSnapshot,
    params(("name" = String, Path, description = "Volume name")),
    responses(
        (status = 201, description = "Taken", body = SnapshotView),
        (status = 400, description = "Invalid name", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not allowed to the token", body = ErrorBody),
        (status = 404, description = "No such volume the caller may see", body = ErrorBody),
        (status = 409, description = "A snapshot of that name exists, or the volume is being cloned", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
    ))]
async fn create_snapshot(
    AxState(ctl): AxState<Control>,
    Caller(who): Caller,
    Param(name): Param,
    Body(req): Body<NewSnapshot>,
) -> ApiResult<(StatusCode, Json<SnapshotView>)> {
    strata_meta::validate_name(&req.name).map_err(|e| ApiError::from(ControlError::from(e)))?;
    let s = ctl.create_snapshot(&who, &name, &req.name).await?;
    Ok((StatusCode::CREATED, Json(s.into())))
}

/// Describe a snapshot, with the bytes it shares and holds alone.
#[utoipa::path(get, path = "/v1/volumes/{name}/snapshots/{snapshot}", tag = "snapshots",
    params(
        ("name" = String, Path, description = "Volume name"),
        ("snapshot" = String, Path, description = "Snapshot name"),
    ),
    responses(
        (status = 200, description = "The snapshot", body = SnapshotView),
        (status = 400, description = "Invalid path", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such volume the caller may see, or no such snapshot", body = ErrorBody),
    ))]
async fn get_snapshot(
    AxState(ctl): AxState<Control>,
    Caller(who): Caller,
    Params2(name, snapshot): Params2,
) -> ApiResult<Json<SnapshotView>> {
    Ok(Json(ctl.get_snapshot(&who, &name, &snapshot).await?.into()))
}

/// Delete a snapshot (admins and editors of the volume's scope); what only it held is freed.
/// Snapshots owned by a data volume or a clone are deleted through their owner (409).
#[utoipa::path(delete, path = "/v1/volumes/{name}/snapshots/{snapshot}", tag = "snapshots",
    params(
        ("name" = String, Path, description = "Volume name"),
        ("snapshot" = String, Path, description = "Snapshot name"),
    ),
    responses(
        (status = 200, description = "Deleted; the snapshot as it was (`held_bytes`: what was freed)", body = SnapshotView),
        (status = 400, description = "Invalid path", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not allowed to the token", body = ErrorBody),
        (status = 404, description = "No such volume the caller may see, or no such snapshot", body = ErrorBody),
        (status = 409, description = "Owned by a data volume or a clone", body = ErrorBody),
    ))]
async fn delete_snapshot(
    AxState(ctl): AxState<Control>,
    Caller(who): Caller,
    Params2(name, snapshot): Params2,
) -> ApiResult<Json<SnapshotView>> {
    Ok(Json(ctl.delete_snapshot(&who, &name, &snapshot).await?.into()))
}

// ---- data volumes ----

/// List the data volumes the caller's scope owns (`origin: owned`) and those usable in it
/// (`origin: shared`: shared with it or an ancestor, or owned by an ancestor).
#[utoipa::path(get, path = "/v1/datavolumes", tag = "datavolumes",
    responses(
        (status = 200, description = "Data volumes by name", body = Vec<DataVolumeView>),
        (status = 401, description = "No valid token", body = ErrorBody),
    ))]
async fn list_datavolumes(AxState(ctl): AxState<Control>, Caller(who): Caller) -> ApiResult<Json<Vec<DataVolumeView>>> {
    Ok(Json(ctl.list_datavolumes(&who).await?.into_iter().map(Into::into).collect()))
}

/// Make a data volume from a volume as it is now (version 1), owned by a scope the caller may
/// edit (admins and editors); the volume must lie within that scope.
#[utoipa::path(post, path = "/v1/datavolumes", tag = "datavolumes", request_body = NewDataVolume,
    responses(
        (status = 201, description = "Created", body = DataVolumeView),
        (status = 400, description = "Invalid request, or a source outside the owning scope", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not allowed to the token", body = ErrorBody),
        (status = 404, description = "No such scope, or no such volume the caller may see", body = ErrorBody),
        (status = 409, description = "A data volume of that name exists, or the volume is being cloned", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
    ))]
async fn create_datavolume(
    AxState(ctl): AxState<Control>,
    Caller(who): Caller,
    Body(req): Body<NewDataVolume>,
) -> ApiResult<(StatusCode, Json<DataVolumeView>)> {
    check_description(&req.description)?;
    strata_meta::validate_name(&req.name).map_err(|e| ApiError::from(ControlError::from(e)))?;
    let d = ctl
        .create_datavolume(
            &who,
            CreateDataVolume { name: req.name, scope: req.scope, source: req.from, description: req.description },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(d.into())))
}

/// Describe a data volume the caller's scope owns or is shared: versions, shares, source.
#[utoipa::path(get, path = "/v1/datavolumes/{name}", tag = "datavolumes",
    params(("name" = String, Path, description = "Data volume name")),
    responses(
        (status = 200, description = "The data volume", body = DataVolumeView),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such data volume the caller may see", body = ErrorBody),
    ))]
async fn get_datavolume(
    AxState(ctl): AxState<Control>,
    Caller(who): Caller,
    Param(name): Param,
) -> ApiResult<Json<DataVolumeView>> {
    Ok(Json(ctl.get_datavolume(&who, &name).await?.into()))
}

/// Delete a data volume and every version (admins and editors of the owning scope); mounts of
/// it fail from their next call.
#[utoipa::path(delete, path = "/v1/datavolumes/{name}", tag = "datavolumes",
    params(("name" = String, Path, description = "Data volume name")),
    responses(
        (status = 200, description = "Deleted; the data volume as it was", body = DataVolumeView),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not allowed to the token, or only shared with its scope", body = ErrorBody),
        (status = 404, description = "No such data volume the caller may see", body = ErrorBody),
        (status = 409, description = "In use", body = ErrorBody),
    ))]
async fn delete_datavolume(
    AxState(ctl): AxState<Control>,
    Caller(who): Caller,
    Param(name): Param,
) -> ApiResult<Json<DataVolumeView>> {
    Ok(Json(ctl.delete_datavolume(&who, &name).await?.into()))
}

/// Make a new version from the source volume as it is now (admins and editors of the owning
/// scope); `dv:NAME` mounts it from now on.
#[utoipa::path(post, path = "/v1/datavolumes/{name}/versions", tag = "datavolumes",
    params(("name" = String, Path, description = "Data volume name")),
    responses(
        (status = 201, description = "The data volume with its new version", body = DataVolumeView),
        (status = 400, description = "The source volume was deleted", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not allowed to the token, or only shared with its scope", body = ErrorBody),
        (status = 404, description = "No such data volume the caller may see", body = ErrorBody),
        (status = 409, description = "The source volume is being cloned", body = ErrorBody),
    ))]
async fn update_datavolume(
    AxState(ctl): AxState<Control>,
    Caller(who): Caller,
    Param(name): Param,
) -> ApiResult<(StatusCode, Json<DataVolumeView>)> {
    Ok((StatusCode::CREATED, Json(ctl.update_datavolume(&who, &name).await?.into())))
}

/// Delete one version of a data volume (admins and editors of the owning scope).
#[utoipa::path(delete, path = "/v1/datavolumes/{name}/versions/{number}", tag = "datavolumes",
    params(
        ("name" = String, Path, description = "Data volume name"),
        ("number" = u32, Path, minimum = 1, description = "Version number"),
    ),
    responses(
        (status = 200, description = "Deleted; the data volume without it", body = DataVolumeView),
        (status = 400, description = "Not a version number", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not allowed to the token, or only shared with its scope", body = ErrorBody),
        (status = 404, description = "No such data volume the caller may see, or no such version", body = ErrorBody),
    ))]
async fn delete_datavolume_version(
    AxState(ctl): AxState<Control>,
    Caller(who): Caller,
    Params2(name, number): Params2,
) -> ApiResult<Json<DataVolumeView>> {
    let n: u32 = number
        .parse()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| ApiError::invalid(format!("version {number:?} is not a version number (1, 2, ...)")))?;
    Ok(Json(ctl.delete_datavolume_version(&who, &name, n).await?.into()))
}

/// The data volume name and the scope path of `/v1/datavolumes/{name}/shares/{scope}`.
fn share_target(uri: &Uri) -> ApiResult<(String, String)> {
    let segs = tail_segments(uri, "/v1/datavolumes/")?;
    match segs.split_first() {
        Some((name, rest)) if rest.first().is_some_and(|s| s == "shares") => Ok((name.clone(), scope_of(&rest[1..])?)),
        _ => Err(ApiError::not_found("no such route (see /openapi.json)")),
    }
}

/// Share a data volume with a scope and everything below it (admins of the owning scope):
/// their tokens may list, describe and mount it read-only. Idempotent.
#[utoipa::path(put, path = "/v1/datavolumes/{name}/shares/{scope}", tag = "datavolumes",
    params(
        ("name" = String, Path, description = "Data volume name"),
        ("scope" = String, Path, max_length = 127, pattern = r"^(cluster|[A-Za-z0-9][A-Za-z0-9._-]{0,62}(/[A-Za-z0-9][A-Za-z0-9._-]{0,62})?)$",
            description = "Scope path: `cluster`, `DEPT` or `DEPT/PROJECT` (`/` raw or as `%2F`)"),
    ),
    responses(
        (status = 200, description = "Shared; the data volume", body = DataVolumeView),
        (status = 400, description = "Invalid scope path", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not an admin of the owning scope", body = ErrorBody),
        (status = 404, description = "No such data volume the caller may see, or no such scope", body = ErrorBody),
    ))]
async fn share_datavolume(
    AxState(ctl): AxState<Control>,
    Caller(who): Caller,
    uri: Uri,
) -> ApiResult<Json<DataVolumeView>> {
    let (name, scope) = share_target(&uri)?;
    Ok(Json(ctl.share_datavolume(&who, &name, &scope).await?.into()))
}

/// End a share (admins of the owning scope): mounts through it fail from their next call.
#[utoipa::path(delete, path = "/v1/datavolumes/{name}/shares/{scope}", tag = "datavolumes",
    params(
        ("name" = String, Path, description = "Data volume name"),
        ("scope" = String, Path, max_length = 127, pattern = r"^(cluster|[A-Za-z0-9][A-Za-z0-9._-]{0,62}(/[A-Za-z0-9][A-Za-z0-9._-]{0,62})?)$",
            description = "Scope path: `cluster`, `DEPT` or `DEPT/PROJECT` (`/` raw or as `%2F`)"),
    ),
    responses(
        (status = 200, description = "Unshared; the data volume", body = DataVolumeView),
        (status = 400, description = "Invalid scope path", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not an admin of the owning scope", body = ErrorBody),
        (status = 404, description = "No such data volume the caller may see, or not shared with that scope", body = ErrorBody),
    ))]
async fn unshare_datavolume(
    AxState(ctl): AxState<Control>,
    Caller(who): Caller,
    uri: Uri,
) -> ApiResult<Json<DataVolumeView>> {
    let (name, scope) = share_target(&uri)?;
    Ok(Json(ctl.unshare_datavolume(&who, &name, &scope).await?.into()))
}

// ---- scopes ----

/// List the caller's scope and those below it.
#[utoipa::path(get, path = "/v1/scopes", tag = "scopes",
    responses(
        (status = 200, description = "Scopes by path", body = Vec<ScopeView>),
        (status = 401, description = "No valid token", body = ErrorBody),
    ))]
async fn list_scopes(AxState(ctl): AxState<Control>, Caller(who): Caller) -> ApiResult<Json<Vec<ScopeView>>> {
    Ok(Json(ctl.list_scopes(&who).await?.into_iter().map(Into::into).collect()))
}

/// Create a department or project scope below one the caller administers.
#[utoipa::path(post, path = "/v1/scopes", tag = "scopes", request_body = NewScope,
    responses(
        (status = 201, description = "Created", body = ScopeView),
        (status = 400, description = "Invalid path", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not an admin of the parent scope", body = ErrorBody),
        (status = 404, description = "The parent department does not exist", body = ErrorBody),
        (status = 409, description = "It exists", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
    ))]
async fn create_scope(
    AxState(ctl): AxState<Control>,
    Caller(who): Caller,
    Body(req): Body<NewScope>,
) -> ApiResult<(StatusCode, Json<ScopeView>)> {
    check_description(&req.description)?;
    strata_meta::control::validate_scope(&req.path).map_err(|e| ApiError::from(ControlError::from(e)))?;
    let s = ctl.create_scope(&who, &req.path, &req.description).await?;
    Ok((StatusCode::CREATED, Json(s.into())))
}

/// Delete an empty scope (no child scopes, volumes or tokens) below the caller's.
#[utoipa::path(delete, path = "/v1/scopes/{path}", tag = "scopes",
    params(("path" = String, Path, description = "Scope path, `DEPT` or `DEPT/PROJECT` (`/` raw or as `%2F`)")),
    responses(
        (status = 200, description = "Deleted; the scope as it was", body = ScopeView),
        (status = 400, description = "Invalid path", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not an admin above the scope", body = ErrorBody),
        (status = 404, description = "No such scope", body = ErrorBody),
        (status = 409, description = "Not empty", body = ErrorBody),
    ))]
async fn delete_scope(AxState(ctl): AxState<Control>, Caller(who): Caller, uri: Uri) -> ApiResult<Json<ScopeView>> {
    let path = scope_of(&tail_segments(&uri, "/v1/scopes/")?)?;
    Ok(Json(ctl.delete_scope(&who, &path).await?.into()))
}

// ---- tokens ----

/// List the tokens of the caller's scope and below (admins).
#[utoipa::path(get, path = "/v1/tokens", tag = "tokens",
    responses(
        (status = 200, description = "Tokens (never their secrets)", body = Vec<TokenView>),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
    ))]
async fn list_tokens(AxState(ctl): AxState<Control>, Caller(who): Caller) -> ApiResult<Json<Vec<TokenView>>> {
    Ok(Json(ctl.list_tokens(&who).await?.into_iter().map(Into::into).collect()))
}

/// Issue a token for a scope the caller administers; the secret is in this answer only.
#[utoipa::path(post, path = "/v1/tokens", tag = "tokens", request_body = NewToken,
    responses(
        (status = 201, description = "Issued, with its secret", body = IssuedTokenView),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not an admin of that scope", body = ErrorBody),
        (status = 404, description = "No such scope", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
    ))]
async fn create_token(
    AxState(ctl): AxState<Control>,
    Caller(who): Caller,
    Body(req): Body<NewToken>,
) -> ApiResult<(StatusCode, Json<IssuedTokenView>)> {
    let ttl = match req.ttl_seconds {
        None => None,
        Some(0) => return Err(ApiError::invalid("ttl_seconds must be at least 1")),
        Some(s) if s > MAX_TTL_SECONDS => {
            return Err(ApiError::invalid(format!("ttl_seconds {s} is more than 100 years")));
        }
        Some(s) => Some(Duration::from_secs(s)),
    };
    let scope = req.scope.unwrap_or_else(|| who.scope.clone());
    strata_meta::control::validate_scope(&scope).map_err(|e| ApiError::from(ControlError::from(e)))?;
    let t = ctl.create_token(&who, &req.name, Role::from(req.role), &scope, ttl).await?;
    Ok((StatusCode::CREATED, Json(IssuedTokenView::new(t.token, t.record))))
}

/// Revoke a token of the caller's scope or below (admins); it stops working at once.
#[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "tokens",
    params(("id" = String, Path, description = "Token id (from the token list)")),
    responses(
        (status = 200, description = "Revoked; the token as it was", body = TokenView),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not an admin above the token", body = ErrorBody),
        (status = 404, description = "No such token", body = ErrorBody),
    ))]
async fn revoke_token(
    AxState(ctl): AxState<Control>,
    Caller(who): Caller,
    Param(id): Param,
) -> ApiResult<Json<TokenView>> {
    Ok(Json(ctl.revoke_token(&who, &id).await?.into()))
}

// ---- policies ----

/// A scope's own rules.
#[utoipa::path(get, path = "/v1/policies/{scope}", tag = "policies",
    params(("scope" = String, Path, description = "Scope path: `cluster`, `DEPT` or `DEPT/PROJECT` (`/` raw or as `%2F`)")),
    responses(
        (status = 200, description = "The rules this scope sets itself", body = PolicyRules),
        (status = 400, description = "Invalid scope path", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not the caller's scope, above or below it", body = ErrorBody),
        (status = 404, description = "No such scope", body = ErrorBody),
    ))]
async fn get_policy(AxState(ctl): AxState<Control>, who: TokenRecord, scope: String) -> ApiResult<Json<PolicyRules>> {
    Ok(Json(ctl.get_policy(&who, &scope).await?.into()))
}

/// Replace a scope's own rules (admins of the scope or above). Rules only narrow what the
/// parent scopes allow; classes named must exist.
#[utoipa::path(put, path = "/v1/policies/{scope}", tag = "policies", request_body = PolicyRules,
    params(("scope" = String, Path, description = "Scope path: `cluster`, `DEPT` or `DEPT/PROJECT` (`/` raw or as `%2F`)")),
    responses(
        (status = 200, description = "The rules now set", body = PolicyRules),
        (status = 400, description = "Invalid rules or scope path", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not an admin of the scope or above", body = ErrorBody),
        (status = 404, description = "No such scope, or a class named does not exist", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
    ))]
async fn set_policy(
    AxState(ctl): AxState<Control>,
    who: TokenRecord,
    scope: String,
    rules: PolicyRules,
) -> ApiResult<Json<PolicyRules>> {
    if let Some(m) = rules.max_volume_size {
        check_bytes("max_volume_size", m)?;
        if m == 0 {
            return Err(ApiError::invalid("max_volume_size must be at least 1 (leave it out for no maximum)"));
        }
    }
    if let Some(q) = rules.quota {
        check_bytes("quota", q)?;
    }
    if rules.allowed_classes.as_ref().is_some_and(|l| l.len() > 256) {
        return Err(ApiError::invalid("at most 256 allowed classes"));
    }
    Ok(Json(ctl.set_policy(&who, &scope, rules.into()).await?.into()))
}

/// The rules in force at a scope, each with the scope it comes from.
#[utoipa::path(get, path = "/v1/policies/{scope}/effective", tag = "policies",
    params(("scope" = String, Path, description = "Scope path: `cluster`, `DEPT` or `DEPT/PROJECT` (`/` raw or as `%2F`)")),
    responses(
        (status = 200, description = "The effective policy", body = EffectivePolicyView),
        (status = 400, description = "Invalid scope path", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not the caller's scope, above or below it", body = ErrorBody),
        (status = 404, description = "No such scope", body = ErrorBody),
    ))]
async fn effective_policy(
    AxState(ctl): AxState<Control>,
    who: TokenRecord,
    scope: String,
) -> ApiResult<Json<EffectivePolicyView>> {
    Ok(Json(ctl.effective_policy(&who, &scope).await?.into()))
}

/// `GET /v1/policies/{scope}[/effective]`: a trailing raw `/effective` segment asks for the
/// effective policy (a project literally named `effective` is `DEPT%2Feffective`).
async fn policy_get(ctl: AxState<Control>, Caller(who): Caller, uri: Uri) -> Response {
    let res = async {
        let mut segs = tail_segments(&uri, "/v1/policies/")?;
        if segs.len() >= 2 && segs.last().is_some_and(|s| s == "effective") {
            segs.pop();
            let scope = scope_of(&segs)?;
            return effective_policy(ctl, who, scope).await.map(IntoResponse::into_response);
        }
        let scope = scope_of(&segs)?;
        get_policy(ctl, who, scope).await.map(IntoResponse::into_response)
    }
    .await;
    res.unwrap_or_else(IntoResponse::into_response)
}

async fn policy_put(ctl: AxState<Control>, Caller(who): Caller, uri: Uri, Body(rules): Body<PolicyRules>) -> Response {
    let res = async {
        let segs = tail_segments(&uri, "/v1/policies/")?;
        if segs.len() >= 2 && segs.last().is_some_and(|s| s == "effective") {
            return Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "the effective policy is computed; PUT the rules of the scope itself",
            ));
        }
        let scope = scope_of(&segs)?;
        set_policy(ctl, who, scope, rules).await.map(IntoResponse::into_response)
    }
    .await;
    res.unwrap_or_else(IntoResponse::into_response)
}

// ---- status ----

/// Server version, metadata engine and connected clients (of the volumes the caller can see).
#[utoipa::path(get, path = "/v1/status", tag = "status",
    responses(
        (status = 200, description = "Status", body = StatusView),
        (status = 401, description = "No valid token", body = ErrorBody),
    ))]
async fn status(AxState(api): AxState<Api>, Caller(who): Caller) -> ApiResult<Json<StatusView>> {
    let (ctl, st) = (&api.ctl, &api.st);
    let visible: std::collections::HashSet<String> =
        ctl.list_volumes(&who).await?.into_iter().map(|v| v.volume.name).collect();
    let sessions = st
        .sessions()
        .await
        .map_err(ControlError::from)?
        .into_iter()
        .filter(|s| visible.contains(&s.volume_name))
        .map(|s| SessionView {
            id: format!("{:016x}", s.id),
            volume: s.volume_name,
            client: s.client,
            since: rfc3339(s.since),
            last_seen: rfc3339(strata_meta::Timespec { sec: s.last_seen.sec, nsec: 0 }),
            version: s.version,
        })
        .collect();
    let cluster = who.scope == strata_meta::control::CLUSTER;
    let pending = if cluster {
        let meta = st.meta.clone();
        let n = tokio::task::spawn_blocking(move || meta.collectable(100_000).map(|v| v.len() as u64))
            .await
            .map_err(|e| ControlError::Internal(e.to_string()))?
            .map_err(ControlError::from)?;
        Some(n)
    } else {
        None
    };
    let servers = if cluster {
        let meta = st.meta.clone();
        let recs = tokio::task::spawn_blocking(move || meta.servers())
            .await
            .map_err(|e| ControlError::Internal(e.to_string()))?
            .map_err(ControlError::from)?;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        Some(
            recs.into_iter()
                .map(|r| {
                    let silent = (now - r.last_seen.sec).max(0) as u64;
                    let up = silent <= crate::presence::SILENT_AFTER.as_secs();
                    ServerView {
                        addr: r.addr,
                        version: r.version,
                        started: rfc3339(r.started),
                        last_seen: rfc3339(strata_meta::Timespec { sec: r.last_seen.sec, nsec: 0 }),
                        silent_secs: silent,
                        health: if up { "up" } else { "silent" }.into(),
                    }
                })
                .collect(),
        )
    } else {
        None
    };
    Ok(Json(StatusView {
        version: env!("CARGO_PKG_VERSION").into(),
        engine: st.meta.engine().into(),
        started: rfc3339(st.started),
        sessions,
        pending_slices: pending,
        data_dir: cluster.then(|| st.data_dir.display().to_string()),
        servers,
    }))
}

// ---- metrics ----

/// The Prometheus exposition (no token: like every exporter's, it is for the monitoring
/// system; it shows volume names and usage, no data and no secrets).
async fn metrics(AxState(api): AxState<Api>) -> Response {
    crate::metrics::get().refresh(&api.st).await;
    ([(header::CONTENT_TYPE, strata_metrics::CONTENT_TYPE)], strata_metrics::encode()).into_response()
}

/// Times a routed request for `strata_rest_durations_histogram_seconds`.
async fn timed(req: Request, next: axum::middleware::Next) -> Response {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let route = req.extensions().get::<axum::extract::MatchedPath>().map(|p| p.as_str().to_owned());
    let resp = next.run(req).await;
    crate::metrics::rest(method.as_str(), route.as_deref().unwrap_or("other"), resp.status().as_u16(), started);
    resp
}

// ---- router and serving ----

async fn no_route() -> ApiError {
    ApiError::not_found("no such route (see /openapi.json)")
}

async fn no_method(method: Method) -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", format!("{method} is not allowed here"))
}

/// What the handlers share.
#[derive(Clone)]
struct Api {
    ctl: Control,
    st: Arc<State>,
}

impl FromRef<Api> for Control {
    fn from_ref(api: &Api) -> Control {
        api.ctl.clone()
    }
}

/// The REST API over a server's state.
pub fn router(st: Arc<State>) -> Router {
    let api = Api { ctl: Control::new(st.clone()), st };
    Router::new()
        .route("/openapi.json", get(openapi))
        .route("/v1/status", get(status))
        .route("/v1/storageclasses", get(list_classes).post(create_class))
        .route("/v1/storageclasses/{name}", get(get_class).put(update_class).delete(delete_class))
        .route("/v1/volumes", get(list_volumes).post(create_volume))
        .route("/v1/volumes/{name}", get(get_volume).patch(resize_volume).delete(delete_volume))
        .route("/v1/volumes/{name}/qos", axum::routing::put(set_volume_qos).delete(clear_volume_qos))
        .route("/v1/volumes/{name}/snapshots", get(list_snapshots).post(create_snapshot))
        .route("/v1/volumes/{name}/snapshots/{snapshot}", get(get_snapshot).delete(delete_snapshot))
        .route("/v1/datavolumes", get(list_datavolumes).post(create_datavolume))
        .route("/v1/datavolumes/{name}", get(get_datavolume).delete(delete_datavolume))
        .route("/v1/datavolumes/{name}/versions", axum::routing::post(update_datavolume))
        .route("/v1/datavolumes/{name}/versions/{number}", axum::routing::delete(delete_datavolume_version))
        .route(
            "/v1/datavolumes/{name}/shares/{*scope}",
            axum::routing::put(share_datavolume).delete(unshare_datavolume),
        )
        .route("/v1/scopes", get(list_scopes).post(create_scope))
        .route("/v1/scopes/{*path}", axum::routing::delete(delete_scope))
        .route("/v1/tokens", get(list_tokens).post(create_token))
        .route("/v1/tokens/{id}", axum::routing::delete(revoke_token))
        .route("/v1/policies/{*scope}", get(policy_get).put(policy_put))
        .merge(ops::routes())
        .route("/metrics", get(metrics))
        .route("/v1/stats", get(stats::stats))
        .route("/ui", get(stats::index))
        .route("/ui/", get(stats::index))
        .route("/ui/app.js", get(stats::app))
        .route("/ui/style.css", get(stats::style))
        .route_layer(axum::middleware::from_fn(timed))
        .fallback(no_route)
        .method_not_allowed_fallback(no_method)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(api)
}

/// Serves HTTP/1.1 requests on one accepted connection until the client closes it.
pub async fn serve_conn(app: Router, sock: tokio::net::TcpStream) {
    let io = hyper_util::rt::TokioIo::new(sock);
    let svc = hyper_util::service::TowerToHyperService::new(app);
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(io, svc);
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "REST connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments() {
        let u: Uri = "/v1/policies/ml/vision/effective".parse().expect("uri");
        assert_eq!(
            tail_segments(&u, "/v1/policies/").ok(),
            Some(vec!["ml".into(), "vision".into(), "effective".into()])
        );
        let u: Uri = "/v1/policies/ml%2Fvision".parse().expect("uri");
        assert_eq!(tail_segments(&u, "/v1/policies/").ok(), Some(vec!["ml/vision".to_string()]));
        assert!(decode_segment("%zz").is_err());
        assert!(decode_segment("%ff").is_err());
    }

    #[test]
    fn document_builds() {
        let v: serde_json::Value = serde_json::from_str(openapi_json()).expect("openapi JSON");
        assert!(v["paths"]["/v1/volumes/{name}"]["patch"].is_object());
        assert!(v["paths"]["/v1/volumes/{name}/qos"]["put"].is_object());
        assert!(v["paths"]["/v1/volumes/{name}/qos"]["delete"].is_object());
        assert!(v["components"]["schemas"]["ErrorBody"].is_object());
        for (path, methods) in [
            ("/v1/volumes/{name}/snapshots", &["get", "post"][..]),
            ("/v1/volumes/{name}/snapshots/{snapshot}", &["get", "delete"]),
            ("/v1/datavolumes", &["get", "post"]),
            ("/v1/datavolumes/{name}", &["get", "delete"]),
            ("/v1/datavolumes/{name}/versions", &["post"]),
            ("/v1/datavolumes/{name}/versions/{number}", &["delete"]),
            ("/v1/datavolumes/{name}/shares/{scope}", &["put", "delete"]),
            ("/v1/admin/dump", &["get"]),
            ("/v1/admin/fsck", &["post"]),
            ("/v1/admin/gc", &["post"]),
            ("/v1/paths/info", &["post"]),
            ("/v1/paths/summary", &["post"]),
        ] {
            for m in methods {
                assert!(v["paths"][path][m].is_object(), "{m} {path} is documented");
            }
        }
        let new_volume = &v["components"]["schemas"]["NewVolume"]["properties"];
        assert!(new_volume["from"]["pattern"].is_string(), "NewVolume.from is bounded: {new_volume}");
        let dv = &v["components"]["schemas"]["DataVolumeView"]["properties"];
        assert!(dv["origin"].is_object() && dv["versions"].is_object(), "DataVolumeView: {dv}");
        let snap = &v["components"]["schemas"]["SnapshotView"]["properties"];
        assert!(snap["held_bytes"].is_object() && snap["shared_bytes"].is_object(), "SnapshotView: {snap}");
        // The stored volume's clone sources are not part of the API's volume.
        assert!(v["components"]["schemas"]["VolumeView"]["properties"]["origins"].is_null());
    }

    #[test]
    fn share_paths() {
        let u: Uri = "/v1/datavolumes/imagenet/shares/ml/vision".parse().expect("uri");
        assert_eq!(share_target(&u).ok(), Some(("imagenet".to_string(), "ml/vision".to_string())));
        let u: Uri = "/v1/datavolumes/imagenet/shares/ml%2Fvision".parse().expect("uri");
        assert_eq!(share_target(&u).ok(), Some(("imagenet".to_string(), "ml/vision".to_string())));
        let u: Uri = "/v1/datavolumes/imagenet/shares/".parse().expect("uri");
        assert!(share_target(&u).is_err());
    }
}
