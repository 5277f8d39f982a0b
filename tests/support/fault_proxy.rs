//! An HTTP fault proxy between the operator and the bed's S3 server, for the chaos suite. Each
//! request is forwarded on its own upstream connection; a seeded share of them gets a fault
//! instead: a 503 SlowDown, a connection reset, a 2–10 s stall, or a response cut off halfway.
//! The counts are kept so the suite can print how many faults it injected.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A small seeded generator (splitmix64): the same seed gives the same faults in the same order.
pub struct Seeded(u64);

impl Seeded {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Self {
        Seeded(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `low..high`.
    pub fn below(&mut self, low: u64, high: u64) -> u64 {
        low + self.next_u64() % (high - low).max(1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

/// How many requests went through and how many got each fault.
#[derive(Default)]
pub struct FaultCounts {
    /// Requests seen.
    pub requests: AtomicU64,
    /// Answered 503 SlowDown without reaching S3.
    pub slow_down: AtomicU64,
    /// Connection closed without an answer.
    pub resets: AtomicU64,
    /// Held 2–10 s before being forwarded.
    pub stalls: AtomicU64,
    /// Response cut off halfway through its body.
    pub truncated: AtomicU64,
}

impl FaultCounts {
    /// Every fault injected.
    pub fn faults(&self) -> u64 {
        self.slow_down.load(Ordering::Relaxed)
            + self.resets.load(Ordering::Relaxed)
            + self.stalls.load(Ordering::Relaxed)
            + self.truncated.load(Ordering::Relaxed)
    }

    /// One line for the suite's table.
    pub fn summary(&self) -> String {
        format!(
            "{} faults in {} requests (503 {}, resets {}, stalls {}, truncated {})",
            self.faults(),
            self.requests.load(Ordering::Relaxed),
            self.slow_down.load(Ordering::Relaxed),
            self.resets.load(Ordering::Relaxed),
            self.stalls.load(Ordering::Relaxed),
            self.truncated.load(Ordering::Relaxed),
        )
    }
}

/// A running proxy: listens on `port`, forwards to `upstream` (host:port).
pub struct FaultProxy {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    /// What it has done.
    pub counts: Arc<FaultCounts>,
    /// Faults are injected only while this is true (checks run without them).
    pub enabled: Arc<AtomicBool>,
    _runtime: tokio::runtime::Runtime,
}

#[derive(Clone, Copy)]
enum Fault {
    None,
    SlowDown,
    Reset,
    Stall(u64),
    Truncate,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` that faults a share `rate` of requests, seeded by `seed`.
    pub fn start(upstream: &str, rate: f64, seed: u64) -> FaultProxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("proxy runtime");
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("proxy port");
        let port = listener.local_addr().expect("address").port();
        let counts = Arc::new(FaultCounts::default());
        let enabled = Arc::new(AtomicBool::new(true));
        let rng = Arc::new(Mutex::new(Seeded::new(seed)));
        let upstream = upstream.to_string();
        {
            let counts = counts.clone();
            let enabled = enabled.clone();
            runtime.spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let (counts, enabled, rng, upstream) = (
                        counts.clone(),
                        enabled.clone(),
                        rng.clone(),
                        upstream.clone(),
                    );
                    tokio::spawn(async move {
                        let _ = serve(client, &upstream, rate, &counts, &enabled, &rng).await;
                    });
                }
            });
        }
        FaultProxy {
            port,
            counts,
            enabled,
            _runtime: runtime,
        }
    }
}

/// Serves one client connection: its requests one after the other, each faulted or forwarded.
async fn serve(
    mut client: TcpStream,
    upstream: &str,
    rate: f64,
    counts: &FaultCounts,
    enabled: &AtomicBool,
    rng: &Mutex<Seeded>,
) -> std::io::Result<()> {
    let mut buffered = Vec::new();
    loop {
        let Some(request) = read_request(&mut client, &mut buffered).await? else {
            return Ok(());
        };
        counts.requests.fetch_add(1, Ordering::Relaxed);
        let fault = {
            let mut rng = rng.lock().expect("rng");
            if enabled.load(Ordering::Relaxed) && rng.chance(rate) {
                match rng.below(0, 4) {
                    0 => Fault::SlowDown,
                    1 => Fault::Reset,
                    2 => Fault::Stall(rng.below(2, 11)),
                    _ => Fault::Truncate,
                }
            } else {
                Fault::None
            }
        };
        match fault {
            Fault::SlowDown => {
                counts.slow_down.fetch_add(1, Ordering::Relaxed);
                let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
                client
                    .write_all(
                        format!(
                            "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await?;
                continue;
            }
            Fault::Reset => {
                counts.resets.fetch_add(1, Ordering::Relaxed);
                // SO_LINGER 0: closing sends a RST, as a dropped connection does.
                let _ = client.set_zero_linger();
                drop(client);
                return Ok(());
            }
            Fault::Stall(seconds) => {
                counts.stalls.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(seconds)).await;
            }
            Fault::Truncate | Fault::None => {}
        }
        let response = forward(upstream, &request).await?;
        if let Fault::Truncate = fault {
            let head_end = find(&response, b"\r\n\r\n").map_or(response.len(), |i| i + 4);
            if response.len() > head_end + 1 {
                counts.truncated.fetch_add(1, Ordering::Relaxed);
                let cut = head_end + (response.len() - head_end) / 2;
                client.write_all(&response[..cut]).await?;
                return Ok(());
            }
        }
        client.write_all(&response).await?;
    }
}

/// One whole request (head and body by Content-Length or chunked), or None at a clean end.
async fn read_request(
    client: &mut TcpStream,
    buffered: &mut Vec<u8>,
) -> std::io::Result<Option<Vec<u8>>> {
    let head_end = loop {
        if let Some(i) = find(buffered, b"\r\n\r\n") {
            break i + 4;
        }
        if !read_more(client, buffered).await? {
            return Ok(None);
        }
    };
    let head = String::from_utf8_lossy(&buffered[..head_end]).to_ascii_lowercase();
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
    };
    let length = if header("transfer-encoding:").is_some_and(|v| v.contains("chunked")) {
        // The body ends with the zero-length chunk and its empty trailer.
        loop {
            if let Some(i) = find(&buffered[head_end..], b"\r\n0\r\n\r\n") {
                break i + 7;
            }
            if buffered[head_end..].starts_with(b"0\r\n\r\n") {
                break 5;
            }
            if !read_more(client, buffered).await? {
                return Ok(None);
            }
        }
    } else {
        header("content-length:")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0)
    };
    while buffered.len() < head_end + length {
        if !read_more(client, buffered).await? {
            return Ok(None);
        }
    }
    let request: Vec<u8> = buffered.drain(..head_end + length).collect();
    Ok(Some(request))
}

async fn read_more(client: &mut TcpStream, buffered: &mut Vec<u8>) -> std::io::Result<bool> {
    let mut chunk = [0u8; 65536];
    let n = client.read(&mut chunk).await?;
    buffered.extend_from_slice(&chunk[..n]);
    Ok(n > 0)
}

/// Sends `request` on a new upstream connection that closes after the answer; returns the
/// whole answer.
async fn forward(upstream: &str, request: &[u8]) -> std::io::Result<Vec<u8>> {
    let head_end = find(request, b"\r\n\r\n").map_or(request.len(), |i| i + 4);
    let head = String::from_utf8_lossy(&request[..head_end]);
    let mut rewritten = String::new();
    for line in head.split("\r\n").filter(|l| !l.is_empty()) {
        if !line.to_ascii_lowercase().starts_with("connection:") {
            rewritten.push_str(line);
            rewritten.push_str("\r\n");
        }
    }
    rewritten.push_str("Connection: close\r\n\r\n");
    let mut server = TcpStream::connect(upstream).await?;
    server.write_all(rewritten.as_bytes()).await?;
    server.write_all(&request[head_end..]).await?;
    let mut response = Vec::new();
    server.read_to_end(&mut response).await?;
    Ok(response)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
