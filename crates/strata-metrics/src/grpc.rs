//! A tower layer that times gRPC calls by path, for tonic servers (`Server::builder().layer`).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

/// Called after each call: its path (`/pkg.Service/Method`), when it started, whether it
/// succeeded (no non-zero `grpc-status` header; errors sent in trailers are not seen).
pub type Record = fn(path: &str, started: Instant, ok: bool);

/// Times every call of the services below it.
#[derive(Clone, Copy, Debug)]
pub struct Timing(pub Record);

impl<S> tower_layer::Layer<S> for Timing {
    type Service = Timed<S>;
    fn layer(&self, inner: S) -> Timed<S> {
        Timed(inner, self.0)
    }
}

/// See [`Timing`].
#[derive(Clone, Debug)]
pub struct Timed<S>(S, Record);

impl<S, B, RB> tower_service::Service<http::Request<B>> for Timed<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let path = req.uri().path().to_string();
        let started = Instant::now();
        let record = self.1;
        let fut = self.0.call(req);
        Box::pin(async move {
            let r = fut.await;
            let ok = match &r {
                Ok(resp) => resp.headers().get("grpc-status").is_none_or(|v| v.as_bytes() == b"0"),
                Err(_) => false,
            };
            record(&path, started, ok);
            r
        })
    }
}
