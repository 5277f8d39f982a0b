//! Database step of a restore: each dump streamed from the repository into the restored
//! database pod of the same workload, once that pod is Ready. Exit code, byte count and
//! checksum are all checked.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, ReadBuf};

use crate::api::DatabaseDumpRecord;
use crate::database::controller_owner;
use crate::database::{database_target, workload_of};

/// What passed through a [`CountingReader`]: bytes, their hash, and whether reading failed.
pub struct Seen {
    /// Bytes read.
    pub bytes: u64,
    /// Their SHA-256 so far.
    pub sha256: Sha256,
    /// The inner reader returned an error (the repository failed mid-stream).
    pub failed: bool,
}

/// Counts and hashes what passes through, so the restore can prove it sent the whole dump.
pub struct CountingReader<R> {
    inner: R,
    seen: Arc<Mutex<Seen>>,
}

impl<R> CountingReader<R> {
    /// Wraps `inner`; the returned handle reads the totals afterwards.
    pub fn new(inner: R) -> (Self, Arc<Mutex<Seen>>) {
        let seen = Arc::new(Mutex::new(Seen {
            bytes: 0,
            sha256: Sha256::new(),
            failed: false,
        }));
        (
            Self {
                inner,
                seen: seen.clone(),
            },
            seen,
        )
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for CountingReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        match &result {
            Poll::Ready(Ok(())) => {
                let fresh = &buf.filled()[before..];
                if let Ok(mut seen) = self.seen.lock() {
                    seen.bytes += fresh.len() as u64;
                    seen.sha256.update(fresh);
                }
            }
            Poll::Ready(Err(_)) => {
                if let Ok(mut seen) = self.seen.lock() {
                    seen.failed = true;
                }
            }
            Poll::Pending => {}
        }
        result
    }
}

fn is_ready(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    status.and_then(|s| s.phase.as_deref()) == Some("Running")
        && status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Waits for the Ready database pod of `workload` in `namespace`; returns its name and container.
pub async fn wait_for_pod(
    client: &Client,
    namespace: &str,
    workload: &str,
    timeout: Duration,
) -> Result<(String, Option<String>, Vec<String>), String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let listed = pods
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        for pod in &listed.items {
            let name = pod.name_any();
            if workload_of(&name, controller_owner(pod)) != workload || !is_ready(pod) {
                continue;
            }
            match database_target(&name, pod.annotations()) {
                Ok(Some(target)) => return Ok((name, target.container, target.restore_command)),
                Ok(None) => continue,
                Err(err) => return Err(err.to_string()),
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "no Ready database pod of {workload} appeared in {namespace} within {timeout:?}"
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Wraps a `sh -c SCRIPT` restore command so it reads exactly `bytes` bytes of stdin (pure).
pub fn exact_length_command(command: &[String], bytes: u64) -> Vec<String> {
    match command {
        [shell, flag, script] if shell == "sh" && flag == "-c" => {
            vec![
                shell.clone(),
                flag.clone(),
                format!("head -c {bytes} | ( {script} )"),
            ]
        }
        other => other.to_vec(),
    }
}

/// Why a dump did not load, and whether reading it from the repository was what failed.
#[derive(Debug)]
pub struct LoadFailure {
    /// For people: what failed and what to do.
    pub reason: String,
    /// The repository stream broke while the dump was being streamed.
    pub repository_failed: bool,
}

impl From<String> for LoadFailure {
    fn from(reason: String) -> Self {
        LoadFailure {
            reason,
            repository_failed: false,
        }
    }
}

/// The dump a restore loads: its size and checksum as the backup recorded them.
pub struct ExpectedDump<'a> {
    /// Bytes of the dump.
    pub bytes: u64,
    /// SHA-256 of the dump, hex.
    pub sha256: &'a str,
}

/// Streams one dump into its restored pod; checks exit code, byte count and checksum.
pub async fn load_dump(
    client: &Client,
    namespace: &str,
    record: &DatabaseDumpRecord,
    dump: Box<dyn AsyncRead + Send + Unpin>,
    timeout: Duration,
) -> Result<String, LoadFailure> {
    let workload = record
        .workload
        .clone()
        .unwrap_or_else(|| format!("Pod/{}", record.pod));
    let (pod, container, command) = wait_for_pod(client, namespace, &workload, timeout).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let expected = ExpectedDump {
        bytes: record.bytes,
        sha256: &record.sha256,
    };
    load_into(
        &pods,
        &pod,
        container.as_deref(),
        &command,
        &expected,
        dump,
        timeout,
    )
    .await?;
    Ok(pod)
}

/// Feeds `dump` to `command` (the pod's restore command) in `pod`, reading exactly the expected
/// bytes, and checks the exit code, the byte count and the checksum. What a worker pod runs too
/// (`rewind database load`).
pub async fn load_into(
    pods: &Api<Pod>,
    pod: &str,
    container: Option<&str>,
    command: &[String],
    expected: &ExpectedDump<'_>,
    dump: Box<dyn AsyncRead + Send + Unpin>,
    timeout: Duration,
) -> Result<(), LoadFailure> {
    // Read exactly the dump's size: some exec paths never pass the end of stdin on to the command.
    let command = exact_length_command(command, expected.bytes);
    let (counting, seen) = CountingReader::new(dump);
    let ran = crate::exec::run(
        pods,
        pod,
        container,
        &command,
        Some(Box::new(counting)),
        timeout,
        None,
    )
    .await;
    let (bytes, digest, repository_failed) = {
        let seen = seen
            .lock()
            .map_err(|_| "checksum state poisoned".to_string())?;
        (
            seen.bytes,
            hex::encode(seen.sha256.clone().finalize()),
            seen.failed,
        )
    };
    if let Err(e) = ran {
        return Err(LoadFailure {
            reason: if repository_failed {
                format!("reading the dump from the repository broke off after {bytes} bytes: {e}")
            } else {
                format!("the restore command failed: {e}")
            },
            repository_failed,
        });
    }
    if bytes != expected.bytes || digest != expected.sha256 {
        return Err(LoadFailure {
            repository_failed,
            reason: format!(
                "the dump read back does not match the backup ({bytes} bytes, sha256 {digest}; expected {} bytes, sha256 {}): run `rewind repo check`",
                expected.bytes, expected.sha256
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[test]
    fn restore_commands_read_exactly_the_dump() {
        let wrapped = exact_length_command(
            &["sh".into(), "-c".into(), "exec pg_restore -d x".into()],
            42,
        );
        assert_eq!(wrapped[2], "head -c 42 | ( exec pg_restore -d x )");
    }

    #[tokio::test]
    async fn counting_reader_sees_every_byte() {
        let data = b"PGDMP dump bytes".to_vec();
        let (mut reader, seen) = CountingReader::new(&data[..]);
        let mut out = Vec::new();
        reader.read_to_end(&mut out).await.expect("read");
        let seen = seen.lock().expect("lock");
        assert_eq!(seen.bytes, data.len() as u64);
        assert!(!seen.failed);
        assert_eq!(
            hex::encode(seen.sha256.clone().finalize()),
            hex::encode(Sha256::digest(&data))
        );
    }
}
