//! Commands in pods over both of the bed's exec paths — kwok's host exec (API server websocket
//! → kwok) and a pod on the real node (API server → the real kubelet's streaming server →
//! containerd): a consumer slower than the command gets every byte and the command's own exit
//! code, and input of a known size reaches the command whole with its end. Without the end
//! frame (src/exec/frame.rs) the kwok path dropped the last megabytes *and* the exit status,
//! and the API server reported Success for `cat big-file; exit 3` (docs/testbed.md).

mod support;

use std::time::Duration;

use bytes::Bytes;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use rewind::exec::{ExecError, run};
use sha2::{Digest, Sha256};
use support::Bed;
use support::real_node::{RealNode, apply_in, wait_ready};

/// Read pace of the slow consumer: a pause per this many bytes...
const PACE_BYTES: usize = 256 * 1024;
/// ...of this long (about 10 MB/s), so a transfer outlasts the API server's 5-second SPDY
/// pings to the node, which is when the tail went missing.
const PACE_PAUSE: Duration = Duration::from_millis(25);

/// Which exec path a test goes through.
#[derive(Clone, Copy, Debug)]
enum ExecPath {
    /// A pod on kwok's node: kwok runs the command on this host.
    KwokHost,
    /// A pod of the shell image on the real node: its kubelet runs it in the container.
    RealKubelet,
}

/// A namespace with one Running pod named `shell` whose exec goes through `path`; None (with a
/// SKIPPED line) on a cluster without that path.
fn pod_with_exec(bed: &Bed, path: ExecPath) -> Option<(support::TestNamespace<'_>, String)> {
    let project = bed.namespace("exec");
    let ns = project.name.clone();
    match path {
        ExecPath::KwokHost => {
            if bed.external {
                eprintln!("SKIPPED on REWIND_E2E_KUBECONFIG cluster: needs the bed's host exec");
                return None;
            }
            bed.bind_exec(&ns, &ns);
            apply_in(
                bed,
                &ns,
                "apiVersion: v1\nkind: Pod\nmetadata: {name: shell}\nspec:\n  containers: [{name: main, image: debian}]\n",
            );
            bed.wait_for_phase(&ns, "pod", "shell", "Running", Duration::from_secs(60));
        }
        ExecPath::RealKubelet => {
            let node = RealNode::of(bed)?;
            apply_in(bed, &ns, &node.shell_pod("shell", "sleep 3600", "", ""));
            wait_ready(bed, &ns, "shell");
        }
    }
    Some((project, ns))
}

/// `count` numbers, one a line, as `seq 1 count` prints them.
fn sequence(count: u64) -> Vec<u8> {
    (1..=count)
        .map(|i| format!("{i}\n"))
        .collect::<String>()
        .into_bytes()
}

/// A script that writes `seq 1 count` to a file first, then `cat`s it, so the producer outruns
/// the reader (the same script on the host and in the busybox image), then runs `after`.
fn cat_sequence(count: u64, after: &str) -> String {
    format!("f=$(mktemp) && seq 1 {count} >\"$f\" && cat \"$f\"; rm -f \"$f\"; {after}")
}

/// Runs `script` in the pod feeding `stdin`, reading its stdout slowly; returns the result
/// and the bytes received.
async fn run_slowly(
    bed: &Bed,
    ns: &str,
    script: &str,
    stdin: Option<Vec<u8>>,
) -> (Result<u64, ExecError>, Vec<u8>) {
    let pods: Api<Pod> = Api::namespaced(bed.client().await, ns);
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Bytes>(2);
    let command = vec!["sh".to_string(), "-c".to_string(), script.to_string()];
    let input = stdin.map(|bytes| {
        Box::new(std::io::Cursor::new(bytes)) as Box<dyn tokio::io::AsyncRead + Send + Unpin>
    });
    let exec = run(
        &pods,
        "shell",
        None,
        &command,
        input,
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

async fn a_slow_reader_gets_every_byte(path: ExecPath) {
    let bed = Bed::get();
    let Some((_project, ns)) = pod_with_exec(&bed, path) else {
        return;
    };
    let expected = sequence(12_000_000);
    let (result, received) = run_slowly(&bed, &ns, &cat_sequence(12_000_000, ""), None).await;
    let bytes = result.expect("the command succeeded and its end marker arrived");
    assert_eq!(
        bytes,
        expected.len() as u64,
        "the byte count covers the whole output ({path:?})"
    );
    assert_eq!(
        received.len(),
        expected.len(),
        "every byte reached the consumer ({path:?})"
    );
    assert_eq!(
        hex::encode(Sha256::digest(&received)),
        hex::encode(Sha256::digest(&expected)),
        "the bytes are the command's bytes, in order ({path:?})"
    );
}

async fn a_slow_reader_gets_the_exit_code(path: ExecPath) {
    let bed = Bed::get();
    let Some((_project, ns)) = pod_with_exec(&bed, path) else {
        return;
    };
    let script = cat_sequence(6_000_000, "echo failing >&2; exit 3");
    let (result, received) = run_slowly(&bed, &ns, &script, None).await;
    match result {
        Err(ExecError::NonZeroExit {
            code: 3,
            stderr_tail,
        }) => {
            assert!(stderr_tail.contains("failing"), "{path:?}: {stderr_tail}")
        }
        other => panic!("{path:?}: expected exit code 3 after the output, got {other:?}"),
    }
    assert_eq!(
        received.len(),
        sequence(6_000_000).len(),
        "the output still arrived whole ({path:?})"
    );
}

/// Input of a known size, read as a restore reads a dump (`head -c N | …`, src/restore/
/// databases.rs): the command gets every byte and sees their end, and the shell then reads
/// Rewind's acknowledgement from the same stdin and exits with the command's code.
async fn input_of_a_known_size_reaches_the_command_whole_with_its_end(path: ExecPath) {
    let bed = Bed::get();
    let Some((_project, ns)) = pod_with_exec(&bed, path) else {
        return;
    };
    let input: Vec<u8> = (0..8_000_000u32).map(|i| (i % 251) as u8).collect();
    let script = format!("head -c {} | ( sha256sum )", input.len());
    let (result, received) = run_slowly(&bed, &ns, &script, Some(input.clone())).await;
    result.unwrap_or_else(|e| panic!("{path:?}: {e:?}"));
    let digest = String::from_utf8_lossy(&received);
    assert_eq!(
        digest.split_whitespace().next(),
        Some(hex::encode(Sha256::digest(&input)).as_str()),
        "the command read exactly the bytes sent ({path:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_gets_every_byte_of_a_large_output_through_kwoks_host_exec() {
    a_slow_reader_gets_every_byte(ExecPath::KwokHost).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_gets_every_byte_of_a_large_output_through_the_real_kubelet() {
    a_slow_reader_gets_every_byte(ExecPath::RealKubelet).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_gets_the_commands_own_exit_code_after_a_large_output_through_kwoks_host_exec()
 {
    a_slow_reader_gets_the_exit_code(ExecPath::KwokHost).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_gets_the_commands_own_exit_code_after_a_large_output_through_the_real_kubelet()
 {
    a_slow_reader_gets_the_exit_code(ExecPath::RealKubelet).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_of_a_known_size_reaches_the_command_whole_with_its_end_through_kwoks_host_exec() {
    input_of_a_known_size_reaches_the_command_whole_with_its_end(ExecPath::KwokHost).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_of_a_known_size_reaches_the_command_whole_with_its_end_through_the_real_kubelet() {
    input_of_a_known_size_reaches_the_command_whole_with_its_end(ExecPath::RealKubelet).await;
}
