//! Commands in pods over the API server's exec (websocket), with streamed stdout/stdin,
//! a bounded stderr tail, the exit code and a timeout. A stream that ends without an
//! exit status is a failure, never a success.

use std::time::Duration;

use bytes::Bytes;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::AttachParams;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// Bytes of stderr kept for messages (the end of it, where errors are).
pub const STDERR_TAIL: usize = 2048;
/// Read size for stdout.
const CHUNK: usize = 256 * 1024;

/// Why a command in a pod did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The API server refused the exec (RBAC, pod gone, container missing).
    #[error("could not start the command: {0}")]
    Start(#[from] kube::Error),
    /// The command ran and failed without an exit code (e.g. killed by a signal).
    #[error("the command failed ({message}): {stderr_tail}")]
    Failed {
        /// What the runtime reported.
        message: String,
        /// The end of stderr.
        stderr_tail: String,
    },
    /// The command ran and exited non-zero.
    #[error("the command exited with code {code}: {stderr_tail}")]
    NonZeroExit {
        /// The exit code.
        code: i32,
        /// The end of stderr.
        stderr_tail: String,
    },
    /// The command did not finish in time and was aborted.
    #[error("the command did not finish within {after:?} and was stopped: {stderr_tail}")]
    Timeout {
        /// The limit that passed.
        after: Duration,
        /// The end of stderr.
        stderr_tail: String,
    },
    /// The connection ended without an exit status: the output may be truncated.
    #[error(
        "the exec stream broke before the command reported its exit status (output may be truncated): {0}"
    )]
    StreamBroken(String),
    /// Where stdout was going refused it.
    #[error("storing the command's output failed: {0}")]
    Sink(String),
}

impl ExecError {
    /// A static label for metrics and event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Start(_) => "exec-start",
            Self::NonZeroExit { .. } | Self::Failed { .. } => "exec-exit",
            Self::Timeout { .. } => "exec-timeout",
            Self::StreamBroken(_) => "exec-stream",
            Self::Sink(_) => "exec-sink",
        }
    }
}

/// What a successful command produced on stdout.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// Bytes read from stdout.
    pub stdout_bytes: u64,
    /// SHA-256 of stdout, hex.
    pub stdout_sha256: String,
    /// The end of stderr (warnings of a successful command).
    pub stderr_tail: String,
}

/// The exit code in an exec status: 0 on Success, the ExitCode cause on failure (pure).
pub fn exit_code(status: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Status) -> Option<i32> {
    if status.status.as_deref() == Some("Success") {
        return Some(0);
    }
    let from_cause = status
        .details
        .as_ref()
        .and_then(|d| d.causes.as_ref())
        .and_then(|causes| {
            causes
                .iter()
                .find(|c| c.reason.as_deref() == Some("ExitCode"))
        })
        .and_then(|c| c.message.as_deref())
        .and_then(|m| m.trim().parse().ok());
    // Runtimes that pass the process error through (kwok) end the message with `exit status N`.
    let from_message = status.message.as_deref().and_then(|message| {
        let (_, after) = message.rsplit_once("exit status ")?;
        after
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    });
    from_cause.or(from_message).or(Some(-1))
}

/// Keeps the last [`STDERR_TAIL`] bytes of a stream (pure helper).
pub fn append_tail(tail: &mut Vec<u8>, bytes: &[u8]) {
    tail.extend_from_slice(bytes);
    if tail.len() > STDERR_TAIL {
        let excess = tail.len() - STDERR_TAIL;
        tail.drain(..excess);
    }
}

/// Runs `command` in a pod's container, feeding `stdin` and sending stdout chunk by chunk
/// to `stdout_to` (a bounded channel: a slow consumer slows the command, memory stays flat).
/// Succeeds only when the command reports exit code 0.
pub async fn run(
    pods: &Api<Pod>,
    pod: &str,
    container: Option<&str>,
    command: &[String],
    stdin: Option<Box<dyn AsyncRead + Send + Unpin>>,
    timeout: Duration,
    stdout_to: Option<tokio::sync::mpsc::Sender<Bytes>>,
) -> Result<ExecOutput, ExecError> {
    let mut params = AttachParams::default()
        .stdout(true)
        .stderr(true)
        .stdin(stdin.is_some());
    if let Some(container) = container {
        params = params.container(container);
    }
    let mut process = pods.exec(pod, command.to_vec(), &params).await?;
    let status = process
        .take_status()
        .ok_or_else(|| ExecError::StreamBroken("no status channel".into()))?;
    let mut stdout = process
        .stdout()
        .ok_or_else(|| ExecError::StreamBroken("no stdout channel".into()))?;
    let mut stderr = process
        .stderr()
        .ok_or_else(|| ExecError::StreamBroken("no stderr channel".into()))?;
    let stdin_writer = process.stdin();

    let feed = async move {
        if let (Some(mut source), Some(mut writer)) = (stdin, stdin_writer) {
            tokio::io::copy(&mut source, &mut writer)
                .await
                .map_err(|e| ExecError::StreamBroken(format!("sending stdin: {e}")))?;
            writer
                .shutdown()
                .await
                .map_err(|e| ExecError::StreamBroken(format!("closing stdin: {e}")))?;
        }
        Ok::<(), ExecError>(())
    };
    let collect_stderr = async move {
        let mut tail = Vec::new();
        let mut buffer = vec![0u8; 8192];
        while let Ok(read) = stderr.read(&mut buffer).await {
            if read == 0 {
                break;
            }
            append_tail(&mut tail, &buffer[..read]);
        }
        String::from_utf8_lossy(&tail).trim().to_string()
    };
    let collect_stdout = async {
        let mut hasher = Sha256::new();
        let mut total = 0u64;
        let mut buffer = vec![0u8; CHUNK];
        loop {
            let read = stdout
                .read(&mut buffer)
                .await
                .map_err(|e| ExecError::StreamBroken(format!("reading stdout: {e}")))?;
            if read == 0 {
                break;
            }
            hasher.update(&buffer[..read]);
            total += read as u64;
            if let Some(sender) = &stdout_to {
                sender
                    .send(Bytes::copy_from_slice(&buffer[..read]))
                    .await
                    .map_err(|_| ExecError::Sink("the receiver stopped".into()))?;
            }
        }
        drop(stdout_to);
        Ok::<(u64, String), ExecError>((total, hex::encode(hasher.finalize())))
    };
    let everything = async { tokio::join!(feed, collect_stdout, collect_stderr, status) };
    let (fed, collected, stderr_tail, status) =
        match tokio::time::timeout(timeout, everything).await {
            Ok(results) => results,
            Err(_) => {
                process.abort();
                return Err(ExecError::Timeout {
                    after: timeout,
                    stderr_tail: String::new(),
                });
            }
        };
    fed?;
    let (stdout_bytes, stdout_sha256) = collected?;
    let Some(status) = status else {
        return Err(ExecError::StreamBroken(if stderr_tail.is_empty() {
            "the connection closed".into()
        } else {
            stderr_tail
        }));
    };
    match exit_code(&status) {
        Some(0) => Ok(ExecOutput {
            stdout_bytes,
            stdout_sha256,
            stderr_tail,
        }),
        Some(-1) | None => Err(ExecError::Failed {
            message: status.message.unwrap_or_else(|| "no exit code".into()),
            stderr_tail,
        }),
        Some(code) => Err(ExecError::NonZeroExit { code, stderr_tail }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Status, StatusCause, StatusDetails};

    #[test]
    fn success_status_is_exit_code_zero() {
        let status = Status {
            status: Some("Success".into()),
            ..Status::default()
        };
        assert_eq!(exit_code(&status), Some(0));
    }

    #[test]
    fn failure_status_carries_the_exit_code() {
        let status = Status {
            status: Some("Failure".into()),
            reason: Some("NonZeroExitCode".into()),
            details: Some(StatusDetails {
                causes: Some(vec![StatusCause {
                    reason: Some("ExitCode".into()),
                    message: Some("3".into()),
                    ..StatusCause::default()
                }]),
                ..StatusDetails::default()
            }),
            ..Status::default()
        };
        assert_eq!(exit_code(&status), Some(3));
    }

    #[test]
    fn exit_status_in_the_message_is_the_exit_code() {
        let status = Status {
            status: Some("Failure".into()),
            message: Some("command terminated: exit status 3".into()),
            ..Status::default()
        };
        assert_eq!(exit_code(&status), Some(3));
    }

    #[test]
    fn failure_without_an_exit_code_is_never_success() {
        let status = Status {
            status: Some("Failure".into()),
            ..Status::default()
        };
        assert_eq!(exit_code(&status), Some(-1));
    }

    #[test]
    fn stderr_tail_keeps_the_end() {
        let mut tail = Vec::new();
        append_tail(&mut tail, &vec![b'a'; STDERR_TAIL]);
        append_tail(&mut tail, b"ERROR: disk full");
        assert_eq!(tail.len(), STDERR_TAIL);
        assert!(tail.ends_with(b"ERROR: disk full"));
    }
}
