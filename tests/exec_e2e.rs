//! Commands in pods over the bed's real exec path (API server websocket → kwok): a consumer
//! slower than the command gets every byte and the command's own exit code. Without the end
//! frame (src/exec/frame.rs) this path dropped the last megabytes *and* the exit status, and
//! the API server reported Success for `cat big-file; exit 3` (docs/testbed.md).

mod support;

use std::time::Duration;

use bytes::Bytes;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use rewind::exec::{ExecError, run};
use sha2::{Digest, Sha256};
use support::Bed;

/// Read pace of the slow consumer: a pause per this many bytes...
const PACE_BYTES: usize = 256 * 1024;
/// ...of this long (about 10 MB/s), so a transfer outlasts the API server's 5-second SPDY
/// pings to the node, which is when the tail went missing.
const PACE_PAUSE: Duration = Duration::from_millis(25);

/// A namespace with one Running pod whose exec runs host commands.
fn pod_with_exec(bed: &Bed) -> (support::TestNamespace<'_>, String) {
    let project = bed.namespace("exec");
    let ns = project.name.clone();
    bed.bind_exec(&ns, &ns);
    bed.kubectl_with_stdin(
        &["-n", &ns, "apply", "-f", "-"],
        Some(b"apiVersion: v1\nkind: Pod\nmetadata: {name: shell}\nspec:\n  containers: [{name: main, image: debian}]\n"),
    )
    .expect("pod");
    bed.wait_for_phase(&ns, "pod", "shell", "Running", Duration::from_secs(60));
    (project, ns)
}

/// Runs `script` reading its stdout slowly; returns the result and the bytes received.
async fn run_slowly(bed: &Bed, ns: &str, script: &str) -> (Result<u64, ExecError>, Vec<u8>) {
    let pods: Api<Pod> = Api::namespaced(bed.client().await, ns);
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Bytes>(2);
    let command = vec!["sh".to_string(), "-c".to_string(), script.to_string()];
    let exec = run(
        &pods,
        "shell",
        None,
        &command,
        None,
        Duration::from_secs(300),
        Some(sender),
    );
    let consume = async {
        let mut received = Vec::new();
        let mut since_pause = 0;
        while let Some(chunk) = receiver.recv().await {
            received.extend_from_slice(&chunk);
            since_pause += chunk.len();
            if since_pause >= PACE_BYTES {
                since_pause = 0;
                tokio::time::sleep(PACE_PAUSE).await;
            }
        }
        received
    };
    let started = std::time::Instant::now();
    let (result, received) = tokio::join!(exec, consume);
    eprintln!("{} bytes in {:?}", received.len(), started.elapsed());
    (result.map(|output| output.stdout_bytes), received)
}

fn sequence(count: u64) -> Vec<u8> {
    (1..=count)
        .map(|i| format!("{i}\n"))
        .collect::<String>()
        .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_gets_every_byte_of_a_large_output() {
    let bed = Bed::get();
    if bed.external {
        eprintln!("SKIPPED on REWIND_E2E_KUBECONFIG cluster: needs the bed's host exec");
        return;
    }
    let (_project, ns) = pod_with_exec(&bed);
    // A file `cat` can send as fast as the pipe takes it: the producer outruns the reader.
    let expected = sequence(12_000_000);
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), &expected).expect("write");
    let script = format!("cat {}", file.path().display());
    let (result, received) = run_slowly(&bed, &ns, &script).await;
    let bytes = result.expect("the command succeeded and its end marker arrived");
    assert_eq!(
        bytes,
        expected.len() as u64,
        "the byte count covers the whole output"
    );
    assert_eq!(
        received.len(),
        expected.len(),
        "every byte reached the consumer"
    );
    assert_eq!(
        hex::encode(Sha256::digest(&received)),
        hex::encode(Sha256::digest(&expected)),
        "the bytes are the command's bytes, in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_gets_the_commands_own_exit_code_after_a_large_output() {
    let bed = Bed::get();
    if bed.external {
        eprintln!("SKIPPED on REWIND_E2E_KUBECONFIG cluster: needs the bed's host exec");
        return;
    }
    let (_project, ns) = pod_with_exec(&bed);
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), sequence(6_000_000)).expect("write");
    let script = format!("cat {}; echo failing >&2; exit 3", file.path().display());
    let (result, received) = run_slowly(&bed, &ns, &script).await;
    match result {
        Err(ExecError::NonZeroExit { code: 3, .. }) => {}
        other => panic!("expected exit code 3 after the output, got {other:?}"),
    }
    assert_eq!(
        received.len(),
        sequence(6_000_000).len(),
        "the output still arrived whole"
    );
}
