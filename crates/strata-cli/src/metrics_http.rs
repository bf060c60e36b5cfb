//! `--metrics ADDR`: the Prometheus endpoint of a client process (mount, gateway, CSI plugin),
//! `GET /metrics` on its own port. The server serves `/metrics` on its main port instead.

use std::convert::Infallible;
use std::net::SocketAddr;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode, header};

/// The `--metrics` option.
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Monitoring")]
pub struct MetricsArgs {
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 0.0.0.0:9567). Without it no
    /// metrics port is opened.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
}

impl MetricsArgs {
    /// Binds the address (an error if it cannot) and serves it in the background.
    pub async fn start(&self) -> Result<()> {
        let Some(addr) = self.metrics else { return Ok(()) };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} for --metrics"))?;
        tracing::info!(addr = %listener.local_addr().unwrap_or(addr), "serving metrics at /metrics");
        tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                };
                tokio::spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(sock);
                    let svc = hyper::service::service_fn(answer);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await;
                });
            }
        });
        Ok(())
    }
}

async fn answer(req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut resp = if req.uri().path() == "/metrics" {
        let mut r = Response::new(Full::new(Bytes::from(strata_metrics::encode())));
        r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(strata_metrics::CONTENT_TYPE));
        r
    } else {
        let mut r = Response::new(Full::new(Bytes::from_static(b"not found: metrics are at /metrics\n")));
        *r.status_mut() = StatusCode::NOT_FOUND;
        r
    };
    if req.method() != hyper::Method::GET && req.method() != hyper::Method::HEAD {
        *resp.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        *resp.body_mut() = Full::new(Bytes::from_static(b"GET /metrics\n"));
    }
    Ok(resp)
}
