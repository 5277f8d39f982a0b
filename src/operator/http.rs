//! The probe and metrics endpoint: `/healthz`, `/readyz`, `/metrics` over plain HTTP/1.1.
//!
//! Deliberately tiny: three GET routes need no web framework.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tracing::debug;

use crate::metrics::Metrics;

/// Readiness shared between the runtime and the probe endpoint.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks the operator ready (CRDs found, controllers started or standing by).
    pub fn set_ready(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }

    /// Whether the operator is ready.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// The response to one request line (pure, so the routes are unit-tested).
pub fn respond(
    request_line: &str,
    readiness: &Readiness,
    metrics: &Metrics,
) -> (u16, &'static str, String) {
    let path = request_line.split_whitespace().nth(1).unwrap_or("/");
    match path {
        "/healthz" | "/livez" => (200, "text/plain", "ok\n".into()),
        "/readyz" if readiness.is_ready() => (200, "text/plain", "ready\n".into()),
        "/readyz" => (
            503,
            "text/plain",
            "not ready: waiting for the CRDs\n".into(),
        ),
        "/metrics" => (
            200,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.render(),
        ),
        _ => (
            404,
            "text/plain",
            "not found: try /healthz, /readyz or /metrics\n".into(),
        ),
    }
}

/// Reads until the request line is complete: a client may send it in several TCP segments.
/// `None` when the client sends nothing usable within five seconds or more than 4 KiB
/// without a line break.
async fn read_request_line(stream: &mut tokio::net::TcpStream) -> Option<String> {
    const LIMIT: usize = 4096;
    let mut head = Vec::with_capacity(256);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        if let Some(end) = head.iter().position(|&byte| byte == b'\n') {
            return Some(String::from_utf8_lossy(&head[..end]).trim_end().to_string());
        }
        if head.len() >= LIMIT {
            return None;
        }
        let mut chunk = [0u8; 1024];
        let read = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if read == 0 {
            return None;
        }
        head.extend_from_slice(&chunk[..read]);
    }
}

/// Serves the endpoint until the task is dropped.
pub async fn serve(
    addr: SocketAddr,
    readiness: Readiness,
    metrics: Metrics,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    loop {
        let (mut stream, peer) = listener.accept().await?;
        let readiness = readiness.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let Some(request_line) = read_request_line(&mut stream).await else {
                return;
            };
            let (code, content_type, body) = respond(&request_line, &readiness, &metrics);
            let reason = match code {
                200 => "OK",
                404 => "Not Found",
                _ => "Service Unavailable",
            };
            let response = format!(
                "HTTP/1.1 {code} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            if let Err(err) = stream.write_all(response.as_bytes()).await {
                debug!(%peer, error = %err, "probe client went away");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readyz_fails_until_the_operator_is_ready() {
        let readiness = Readiness::default();
        let metrics = Metrics::default();
        assert_eq!(respond("GET /readyz HTTP/1.1", &readiness, &metrics).0, 503);
        readiness.set_ready(true);
        assert_eq!(respond("GET /readyz HTTP/1.1", &readiness, &metrics).0, 200);
    }

    #[test]
    fn healthz_answers_and_unknown_paths_are_404() {
        let readiness = Readiness::default();
        let metrics = Metrics::default();
        assert_eq!(
            respond("GET /healthz HTTP/1.1", &readiness, &metrics).0,
            200
        );
        assert_eq!(respond("GET /nope HTTP/1.1", &readiness, &metrics).0, 404);
    }

    #[tokio::test]
    async fn a_request_line_split_across_segments_is_still_routed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let server = tokio::spawn(serve(addr, Readiness::default(), Metrics::default()));
        let mut client = loop {
            if let Ok(client) = tokio::net::TcpStream::connect(addr).await {
                break client;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        };
        client.write_all(b"GET ").await.expect("write");
        client.flush().await.expect("flush");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        client
            .write_all(b"/healthz HTTP/1.1\r\n\r\n")
            .await
            .expect("write");
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.expect("read");
        server.abort();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
}
