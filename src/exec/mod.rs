//! Commands in pods over the API server's exec (websocket), with streamed stdout/stdin,
//! a bounded stderr tail, the exit code and a timeout. A stream that ends without an
//! exit status is a failure, never a success; `sh -c` commands are framed ([`frame`]) so a
//! lost stdout tail or a lost exit status cannot pass for success either.

pub mod frame;

use std::time::Duration;

use bytes::Bytes;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::Api;
use kube::api::AttachParams;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use frame::{Frame, TrailerScanner};

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
pub fn exit_code(status: &Status) -> Option<i32> {
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

/// How a command ended, from what arrived (pure): the framed trailer's exit code wins over the
/// exec status, which a torn-down connection can lose or turn into a false Success.
pub fn outcome(
    framed: bool,
    trailer_code: Option<i32>,
    status: Option<&Status>,
    stdout_bytes: u64,
    stderr_tail: String,
) -> Result<String, ExecError> {
    let status_code = status.and_then(exit_code);
    match (framed, trailer_code) {
        (true, Some(0)) => Ok(stderr_tail),
        (true, Some(code)) => Err(ExecError::NonZeroExit { code, stderr_tail }),
        (true, None) => match status_code {
            Some(code) if code > 0 => Err(ExecError::NonZeroExit { code, stderr_tail }),
            _ => Err(ExecError::StreamBroken(format!(
                "stdout ended after {stdout_bytes} bytes without the command's end marker: the exec connection dropped the rest (kubernetes/kubernetes#124571); nothing was kept as complete{}",
                if stderr_tail.is_empty() {
                    String::new()
                } else {
                    format!("; stderr: {stderr_tail}")
                }
            ))),
        },
        (false, _) => {
            let Some(status) = status else {
                return Err(ExecError::StreamBroken(if stderr_tail.is_empty() {
                    "the connection closed".into()
                } else {
                    stderr_tail
                }));
            };
            match status_code {
                Some(0) => Ok(stderr_tail),
                Some(-1) | None => Err(ExecError::Failed {
                    message: status
                        .message
                        .clone()
                        .unwrap_or_else(|| "no exit code".into()),
                    stderr_tail,
                }),
                Some(code) => Err(ExecError::NonZeroExit { code, stderr_tail }),
            }
        }
    }
}

/// Runs `command` in a pod's container, feeding `stdin` and sending stdout chunk by chunk
/// to `stdout_to` (a bounded channel: a slow consumer slows the command, memory stays flat).
/// `sh -c` commands run inside a [`Frame`]: success needs the frame's end marker with exit
/// code 0, so a stdout tail lost in transit is an error, never a short success.
pub async fn run(
    pods: &Api<Pod>,
    pod: &str,
    container: Option<&str>,
    command: &[String],
    stdin: Option<Box<dyn AsyncRead + Send + Unpin>>,
    timeout: Duration,
    stdout_to: Option<tokio::sync::mpsc::Sender<Bytes>>,
) -> Result<ExecOutput, ExecError> {
    let frame = Frame::random();
    let framed = frame.wrap(command, stdin.is_some());
    let is_framed = framed.is_some();
    let command = framed.unwrap_or_else(|| command.to_vec());
    let mut params = AttachParams::default()
        .stdout(true)
        .stderr(true)
        .stdin(stdin.is_some() || is_framed);
    if let Some(container) = container {
        params = params.container(container);
    }
    let mut process = pods.exec(pod, command, &params).await?;
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
    let (ended, trailer_read) = tokio::sync::oneshot::channel::<()>();

    let feed = async move {
        let Some(mut writer) = stdin_writer else {
            return Ok(());
        };
        let sent = match stdin {
            Some(mut source) => tokio::io::copy(&mut source, &mut writer)
                .await
                .map(|_| ())
                .map_err(|e| ExecError::StreamBroken(format!("sending stdin: {e}"))),
            None => Ok(()),
        };
        if is_framed {
            // The shell waits for this before it exits, even when sending its input failed
            // (that error stands); write errors are moot once the trailer is in.
            if trailer_read.await.is_ok() {
                let _ = writer.write_all(frame::ACK).await;
                let _ = writer.shutdown().await;
            }
            return sent;
        }
        sent?;
        writer
            .shutdown()
            .await
            .map_err(|e| ExecError::StreamBroken(format!("closing stdin: {e}")))?;
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
    let mut scanner = is_framed.then(|| frame.scanner());
    let collect_stdout = async {
        let mut hasher = Sha256::new();
        let mut total = 0u64;
        let mut buffer = vec![0u8; CHUNK];
        let mut ended = Some(ended);
        loop {
            let read = match stdout.read(&mut buffer).await {
                Ok(read) => read,
                // Once the trailer is in, the connection going away is the normal end.
                Err(_) if scanner.as_ref().is_some_and(|s| s.exit_code().is_some()) => 0,
                Err(e) => return Err(ExecError::StreamBroken(format!("reading stdout: {e}"))),
            };
            if read == 0 {
                break;
            }
            let output = match scanner.as_mut() {
                Some(scanner) => {
                    let mut output = Vec::with_capacity(read);
                    scanner
                        .push(&buffer[..read], &mut output)
                        .map_err(|e| ExecError::StreamBroken(e.to_string()))?;
                    if scanner.exit_code().is_some()
                        && let Some(ended) = ended.take()
                    {
                        let _ = ended.send(());
                    }
                    Bytes::from(output)
                }
                None => Bytes::copy_from_slice(&buffer[..read]),
            };
            if output.is_empty() {
                continue;
            }
            hasher.update(&output);
            total += output.len() as u64;
            if let Some(sender) = &stdout_to {
                sender
                    .send(output)
                    .await
                    .map_err(|_| ExecError::Sink("the receiver stopped".into()))?;
            }
        }
        drop(stdout_to);
        drop(ended);
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
    let trailer_code = scanner.as_ref().and_then(TrailerScanner::exit_code);
    // A command that reported a failure is that failure, whatever happened to its input.
    if !matches!(trailer_code, Some(code) if code != 0) {
        fed?;
    }
    let (stdout_bytes, stdout_sha256) = collected?;
    let stderr_tail = outcome(
        is_framed,
        trailer_code,
        status.as_ref(),
        stdout_bytes,
        stderr_tail,
    )?;
    Ok(ExecOutput {
        stdout_bytes,
        stdout_sha256,
        stderr_tail,
    })
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
    fn a_framed_command_without_its_trailer_is_broken_even_when_the_status_says_success() {
        let success = Status {
            status: Some("Success".into()),
            ..Status::default()
        };
        let err = outcome(true, None, Some(&success), 196_284_416, String::new())
            .expect_err("a lost tail is never success");
        assert_eq!(err.category(), "exec-stream");
        assert!(err.to_string().contains("196284416 bytes"), "{err}");
    }

    #[test]
    fn a_framed_commands_trailer_decides_even_when_the_status_is_lost() {
        assert_eq!(
            outcome(true, Some(0), None, 5, "warn".into()).ok(),
            Some("warn".to_string())
        );
        let err = outcome(true, Some(2), None, 5, String::new()).expect_err("non-zero");
        assert!(
            matches!(err, ExecError::NonZeroExit { code: 2, .. }),
            "{err}"
        );
    }

    #[test]
    fn a_framed_command_that_never_ran_reports_the_shells_exit_code() {
        let failed = Status {
            status: Some("Failure".into()),
            message: Some("command terminated: exit status 127".into()),
            ..Status::default()
        };
        let err =
            outcome(true, None, Some(&failed), 0, "sh: not found".into()).expect_err("not found");
        assert!(
            matches!(err, ExecError::NonZeroExit { code: 127, .. }),
            "{err}"
        );
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
