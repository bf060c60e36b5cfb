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

/// Ends the connection after an error answer to a request that came with a body. The body may
/// be unread (a PUT refused before its data, possibly never sent after `Expect: 100-continue`),
/// and bytes of it left on a kept-alive connection would be taken for the next request.
#[derive(Clone)]
struct CloseAfterRefusal(S3Service);

impl hyper::service::Service<hyper::Request<hyper::body::Incoming>> for CloseAfterRefusal {
    type Response = s3s::HttpResponse;
    type Error = s3s::HttpError;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn call(&self, req: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        use hyper::body::Body as _;
        let has_body = !req.body().is_end_stream();
        let op = crate::metrics::operation(
            req.method().as_str(),
            req.uri().path(),
            req.uri().query().unwrap_or(""),
            req.headers().contains_key("x-amz-copy-source"),
        );
        let started = std::time::Instant::now();
        let fut = hyper::service::Service::call(&self.0, req);
        Box::pin(async move {
            let resp = fut.await;
            crate::metrics::record(op, started);
            let mut resp = resp?;
            if has_body && (resp.status().is_client_error() || resp.status().is_server_error()) {
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
        let conn = conns.serve_connection(TokioIo::new(stream), CloseAfterRefusal(svc.clone())).into_owned();
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
