//! The control-plane commands' client of the server's REST API: one HTTP/1.1 request per
//! connection, JSON both ways, errors turned into one line for people.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode, header};
use serde::Serialize;
use serde::de::DeserializeOwned;
use strata_server::rest::model::ErrorBody;

use crate::util::{ServerArgs, TokenArgs};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A failed call as the server explained it.
#[derive(Debug)]
pub struct ApiFailure {
    /// HTTP status.
    pub status: StatusCode,
    /// The error's `code`.
    pub code: String,
    /// The error's message.
    pub message: String,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.code.as_str() {
            "unauthenticated" => write!(f, "authentication failed: {}", self.message),
            "forbidden" => write!(f, "permission denied: {}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ApiFailure {}

/// A client of one server with one token.
pub struct Api {
    addr: String,
    token: String,
}

/// Percent-encodes one path segment (everything but unreserved characters).
pub fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A scope path for a URL: each part encoded, joined by a raw `/`.
pub fn scope_path(s: &str) -> String {
    s.split('/').map(seg).collect::<Vec<_>>().join("/")
}

impl Api {
    /// A client from the usual `--server` and token flags.
    pub fn new(server: &ServerArgs, token: &TokenArgs) -> Result<Api> {
        Ok(Api::with_token(&server.server, token.resolve()?))
    }

    /// A client of `addr` (`HOST:PORT`, optionally `http://HOST:PORT`) with `token`.
    pub fn with_token(addr: &str, token: String) -> Api {
        let addr = addr.trim().trim_start_matches("http://").trim_end_matches('/').to_string();
        Api { addr, token }
    }

    /// `GET path`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call(Method::GET, path, None::<&()>).await
    }

    /// `POST path` with a JSON body.
    pub async fn post<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<T> {
        self.call(Method::POST, path, Some(body)).await
    }

    /// `PUT path` with a JSON body.
    pub async fn put<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<T> {
        self.call(Method::PUT, path, Some(body)).await
    }

    /// `PATCH path` with a JSON body.
    pub async fn patch<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<T> {
        self.call(Method::PATCH, path, Some(body)).await
    }

    /// `DELETE path`.
    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call(Method::DELETE, path, None::<&()>).await
    }

    /// One request; a non-2xx answer becomes an [`ApiFailure`].
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T> {
        let (status, bytes) = self.send(method, path, body.map(serde_json::to_vec).transpose()?).await?;
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .with_context(|| format!("unexpected answer from the strata server at {}", self.addr));
        }
        Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(e) => ApiFailure { status, code: e.error.code, message: e.error.message }.into(),
            Err(_) => anyhow!(
                "the strata server at {} answered {status}: {}",
                self.addr,
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).trim()
            ),
        })
    }

    async fn send(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<(StatusCode, Bytes)> {
        let (resp, conn) = self.request(method, path, body).await?;
        let talk = async {
            let resp = resp.await?;
            let status = resp.status();
            let bytes = resp.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, bytes))
        };
        let res = tokio::time::timeout(REQUEST_TIMEOUT, talk)
            .await
            .map_err(|_| anyhow!("the strata server at {} did not answer within {REQUEST_TIMEOUT:?}", self.addr))?
            .map_err(|e| anyhow!("cannot talk to the strata server at {}: {e}", self.addr));
        conn.abort();
        res
    }

    /// A request whose answer is streamed: the response once its head arrived (a non-2xx
    /// answer becomes an [`ApiFailure`]), and the connection's task, to abort when done. The
    /// body may take as long as it takes.
    pub async fn streamed(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<(hyper::Response<hyper::body::Incoming>, tokio::task::JoinHandle<()>)> {
        let (resp, conn) = self.request(method, path, body.map(serde_json::to_vec).transpose()?).await?;
        let resp = tokio::time::timeout(REQUEST_TIMEOUT, resp)
            .await
            .map_err(|_| anyhow!("the strata server at {} did not answer within {REQUEST_TIMEOUT:?}", self.addr))?
            .map_err(|e| anyhow!("cannot talk to the strata server at {}: {e}", self.addr))?;
        if resp.status().is_success() {
            return Ok((resp, conn));
        }
        let status = resp.status();
        let bytes = tokio::time::timeout(REQUEST_TIMEOUT, resp.into_body().collect())
            .await
            .map_err(|_| anyhow!("the strata server at {} did not answer within {REQUEST_TIMEOUT:?}", self.addr))?
            .map_err(|e| anyhow!("cannot talk to the strata server at {}: {e}", self.addr))?
            .to_bytes();
        conn.abort();
        Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(e) => ApiFailure { status, code: e.error.code, message: e.error.message }.into(),
            Err(_) => anyhow!("the strata server at {} answered {status}", self.addr),
        })
    }

    /// Connects and sends one request: the response to await, and the connection's task.
    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(
        impl std::future::Future<Output = hyper::Result<hyper::Response<hyper::body::Incoming>>> + use<>,
        tokio::task::JoinHandle<()>,
    )> {
        if self.addr.starts_with("https://") {
            bail!("--server {}: TLS is not supported yet; give HOST:PORT", self.addr);
        }
        let unreachable = |e: &dyn std::fmt::Display| anyhow!("cannot reach strata server at {}: {e}", self.addr);
        // Several servers may be listed (`a:7420,b:7420`): the first that accepts serves.
        let mut stream = None;
        let mut errors = Vec::new();
        for addr in self.addr.split(',').map(str::trim).filter(|a| !a.is_empty()) {
            match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
                Ok(Ok(s)) => {
                    stream = Some((addr.to_string(), s));
                    break;
                }
                Ok(Err(e)) => errors.push(format!("{addr}: {e}")),
                Err(_) => errors.push(format!("{addr}: connection timed out")),
            }
        }
        let (host, stream) = stream.ok_or_else(|| unreachable(&errors.join("; ")))?;
        let _ = stream.set_nodelay(true);
        let (mut tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(&e))?;
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &host)
            .header(header::ACCEPT, "application/json")
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token));
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req.body(Full::new(Bytes::from(body.unwrap_or_default()))).context("bad request")?;
        Ok((tx.send_request(req), conn))
    }
}

/// Whether an error is the server's answer with this status.
pub fn is_status(e: &anyhow::Error, status: StatusCode) -> bool {
    e.downcast_ref::<ApiFailure>().is_some_and(|f| f.status == status)
}
