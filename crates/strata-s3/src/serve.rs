//! HTTP serving: s3s's service on hyper connections, with a graceful stop.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use hyper_util::server::graceful::GracefulShutdown;
use s3s::service::{S3Service, S3ServiceBuilder};
use tokio::net::TcpListener;

use crate::attach::Attachments;
use crate::auth::{Keyring, KeyringAuth};
use crate::gateway::{Gateway, Limits};

/// Bucket names are volume names (letters, digits, '.', '_' and '-'), which S3's own rules
/// would partly refuse.
struct VolumeNames;

impl s3s::validation::NameValidation for VolumeNames {
    fn validate_bucket_name(&self, name: &str) -> bool {
        !name.is_empty() && name.len() <= 253 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    }
}

/// The S3 HTTP service of a gateway.
pub fn service(keys: Arc<Keyring>, att: Arc<Attachments>, limits: Limits, region: String) -> S3Service {
    let mut b = S3ServiceBuilder::new(Gateway::new(keys.clone(), att, limits, region));
    b.set_auth(KeyringAuth(keys));
    b.set_validation(VolumeNames);
    b.build()
}

/// What the gateway does around s3s for every request: ends the connection after an error
/// answer to a request that came with a body (the body may be unread, possibly never sent
/// after `Expect: 100-continue`, and bytes of it left on a kept-alive connection would be taken
/// for the next request); gives every answer a request id, in its `x-amz-request-id` header
/// and in the body of an error; refuses presigned URLs valid for more than 7 days; and accepts
/// SigV4 requests dated by `Date` rather than `X-Amz-Date` (s3s insists on the latter).
#[derive(Clone)]
struct Around(S3Service);

/// Longest validity of a presigned URL, as in S3.
pub const MAX_PRESIGN_SECS: u64 = 7 * 24 * 3600;

/// SigV4 allows a request to be dated by its `Date` header, which it then signs; botocore
/// does so whenever the caller sets `Date`. The same instant is given to s3s as the
/// `X-Amz-Date` it expects, which is not a signed header and so leaves the signature as it is.
fn date_as_amz_date(h: &mut hyper::HeaderMap) {
    let sigv4 = h.get(hyper::header::AUTHORIZATION).is_some_and(|v| v.as_bytes().starts_with(b"AWS4-HMAC-SHA256"));
    if !sigv4 || h.contains_key("x-amz-date") {
        return;
    }
    let Some(date) = h.get(hyper::header::DATE).and_then(|v| v.to_str().ok()) else { return };
    // RFC 2822 dates (Python's `formatdate`) say "-0000" or "+0000" where HTTP says "GMT".
    let date = date.trim();
    let date = match date.strip_suffix(" -0000").or_else(|| date.strip_suffix(" +0000")) {
        Some(d) => format!("{d} GMT"),
        None => date.to_string(),
    };
    let Ok(t) = s3s::dto::Timestamp::parse(s3s::dto::TimestampFormat::HttpDate, &date) else { return };
    let t = time::OffsetDateTime::from(t);
    let amz = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    if let Ok(v) = hyper::header::HeaderValue::from_str(&amz) {
        h.insert("x-amz-date", v);
    }
}

/// The refusal of a presigned URL whose `X-Amz-Expires` is beyond S3's 7 days.
fn presign_too_long(uri: &hyper::Uri) -> Option<s3s::S3Error> {
    let q = uri.query()?;
    let secs = q.split('&').find_map(|kv| kv.strip_prefix("X-Amz-Expires="))?;
    match secs.parse::<u64>() {
        Ok(n) if n <= MAX_PRESIGN_SECS => None,
        _ => Some(s3s::S3Error::with_message(
            s3s::S3ErrorCode::AuthorizationQueryParametersError,
            format!("X-Amz-Expires must be less than a week (in seconds) that is; {MAX_PRESIGN_SECS}"),
        )),
    }
}

/// An error body with `<RequestId>` added, if it has none.
fn with_request_id(body: &[u8], id: &str) -> Option<bytes::Bytes> {
    let text = std::str::from_utf8(body).ok()?;
    if text.contains("<RequestId>") {
        return None;
    }
    let at = text.rfind("</Error>")?;
    Some(bytes::Bytes::from(format!("{}<RequestId>{id}</RequestId>{}", &text[..at], &text[at..])))
}

impl hyper::service::Service<hyper::Request<hyper::body::Incoming>> for Around {
    type Response = s3s::HttpResponse;
    type Error = s3s::HttpError;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn call(&self, mut req: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        use hyper::body::Body as _;
        let id = format!("{:016X}", rand::random::<u64>());
        let has_body = !req.body().is_end_stream();
        let op = crate::metrics::operation(
            req.method().as_str(),
            req.uri().path(),
            req.uri().query().unwrap_or(""),
            req.headers().contains_key("x-amz-copy-source"),
        );
        let started = std::time::Instant::now();
        let served = match presign_too_long(req.uri()) {
            Some(refusal) => Err(refusal),
            None => {
                date_as_amz_date(req.headers_mut());
                Ok(hyper::service::Service::call(&self.0, req))
            }
        };
        Box::pin(async move {
            let resp = match served {
                Ok(f) => f.await,
                Err(e) => e.to_http_response().map_err(|e| s3s::HttpError::new(Box::new(e))),
            };
            crate::metrics::record(op, started);
            let mut resp = resp?;
            let failed = resp.status().is_client_error() || resp.status().is_server_error();
            if let Ok(v) = hyper::header::HeaderValue::from_str(&id) {
                resp.headers_mut().insert("x-amz-request-id", v);
            }
            if failed && let Some(b) = resp.body().bytes().and_then(|b| with_request_id(&b, &id)) {
                resp.headers_mut().insert(hyper::header::CONTENT_LENGTH, hyper::header::HeaderValue::from(b.len()));
                *resp.body_mut() = s3s::Body::from(b);
            }
            if has_body && failed {
                resp.headers_mut().insert(hyper::header::CONNECTION, hyper::header::HeaderValue::from_static("close"));
            }
            Ok(resp)
        })
    }
}

/// How long open connections may finish their requests once a stop was asked for.
const DRAIN: Duration = Duration::from_secs(10);

/// Serves `svc` on `listener` until `shutdown` completes, then lets open connections finish
/// (for up to 10 s).
pub async fn serve(listener: TcpListener, svc: S3Service, shutdown: impl Future<Output = ()>) {
    let mut conns = ConnBuilder::new(TokioExecutor::new());
    // A client that never finishes its headers does not hold a connection forever.
    conns.http1().timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(30));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let conn = conns.serve_connection(TokioIo::new(stream), Around(svc.clone())).into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open {DRAIN:?} after the stop; closing them");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_header_dates_a_sigv4_request() {
        let mut h = hyper::HeaderMap::new();
        h.insert(hyper::header::DATE, "Sun, 06 Dec 2026 20:25:24 GMT".parse().unwrap());
        date_as_amz_date(&mut h);
        assert!(h.get("x-amz-date").is_none(), "not SigV4: left alone");
        h.insert(hyper::header::AUTHORIZATION, "AWS4-HMAC-SHA256 Credential=x".parse().unwrap());
        date_as_amz_date(&mut h);
        assert_eq!(h.get("x-amz-date").unwrap(), "20261206T202524Z");
        h.remove("x-amz-date");
        h.insert(hyper::header::DATE, "Sun, 06 Dec 2026 20:25:25 -0000".parse().unwrap());
        date_as_amz_date(&mut h);
        assert_eq!(h.get("x-amz-date").unwrap(), "20261206T202525Z");
    }

    #[test]
    fn presign_limit_and_request_ids() {
        let uri = |q: &str| format!("http://h/b/k?{q}").parse::<hyper::Uri>().unwrap();
        assert!(presign_too_long(&uri("X-Amz-Expires=604800")).is_none());
        assert!(presign_too_long(&uri("X-Amz-Expires=604801")).is_some());
        assert!(presign_too_long(&uri("list-type=2")).is_none());
        let b = with_request_id(b"<Error><Code>NoSuchKey</Code></Error>", "ID").unwrap();
        assert_eq!(&b[..], b"<Error><Code>NoSuchKey</Code><RequestId>ID</RequestId></Error>");
        assert!(with_request_id(b"<Error><RequestId>X</RequestId></Error>", "ID").is_none());
    }
}
