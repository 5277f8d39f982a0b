//! `make run` as a new user runs it: on the test bed it backs up the sample account, restores
//! the shop into a new namespace, prints what came back beside the original (rows and files
//! equal, the token changed, the CronJob suspended, the Ingress left out with its reason), then
//! keeps the operator running in the foreground until Ctrl-C stops it cleanly.

mod support;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{Bed, repo_root};

/// Longer than the story takes on a warm bed (about a minute), shorter than a hang.
const STORY: Duration = Duration::from_secs(600);

fn alive(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

/// Everything `make run` printed so far.
fn output(path: &std::path::Path) -> String {
    let mut text = String::new();
    if let Ok(mut file) = std::fs::File::open(path) {
        let _ = file.read_to_string(&mut text);
    }
    text
}

#[test]
fn make_run_tells_the_whole_story_and_keeps_the_operator_running_until_ctrl_c() {
    let bed = Bed::get();
    if bed.external || bed.var("REAL_NODE").is_none() {
        eprintln!("SKIPPED: make run's story is checked on the local test bed with its real node");
        return;
    }
    let out_dir = tempfile::tempdir().expect("temp dir");
    let out_path = out_dir.path().join("make-run.out");
    let out = std::fs::File::create(&out_path).expect("output file");
    let mut make = Command::new("make");
    make.args(["--no-print-directory", "run"])
        .current_dir(repo_root())
        .env("REWIND_BIN", env!("CARGO_BIN_EXE_rewind"))
        .envs(bed.envs())
        // Not the outer make's jobserver: this make is the user's own.
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .env_remove("MAKELEVEL")
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup"))
        .stderr(out);
    // Its own process group, as a terminal's foreground job: Ctrl-C reaches all of it.
    std::os::unix::process::CommandExt::process_group(&mut make, 0);
    let mut child = make.spawn().expect("make run");
    let group = child.id() as i32;
    let interrupt = |signal| unsafe { libc::kill(-group, signal) };

    let started = Instant::now();
    let text = loop {
        let text = output(&out_path);
        if text.contains("--- operator log") {
            break text;
        }
        if let Some(status) = child.try_wait().expect("make run's status") {
            panic!("make run ended ({status}) before the story was told:\n{text}");
        }
        if started.elapsed() > STORY {
            interrupt(libc::SIGINT);
            let _ = child.wait();
            panic!("make run did not tell its story within {STORY:?}:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!("{text}");
    for expected in [
        "Completed [",
        "Restore from AccountBackup",
        "equal (dump loaded into the restored pod)",
        "equal (PVC from the snapshot; also copied into the repository)",
        "regenerated (values masked)",
        "suspend=false",
        "suspend=true",
        "left out: an Ingress would take the original project's hosts",
        "kubectl rewind list demo",
        "kubectl rewind describe demo-now-",
    ] {
        assert!(
            text.contains(expected),
            "make run's output lacks {expected:?}"
        );
    }
    assert!(
        !text.contains("DIFFERENT") && !text.contains("NOT regenerated"),
        "something came back wrong"
    );
    let operator: i32 = text
        .split("operator started (pid ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|pid| pid.parse().ok())
        .expect("make run names the operator's pid");
    let backup = text
        .split("kubectl rewind describe ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the backup's name")
        .to_string();
    // On the bed both volumes were copied into the repository by mover pods, not only snapshotted.
    let copies = bed
        .jsonpath(
            &["accountbackup", &backup],
            "{.status.volumeSnapshots[*].repositoryCopy.snapshot}",
        )
        .unwrap_or_default();
    assert_eq!(
        copies.split_whitespace().count(),
        2,
        "both volumes of the sample have a repository copy: {copies:?}"
    );
    let target = text
        .split("--to demo-shop=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the restore's target")
        .to_string();

    // The operator keeps running in the foreground.
    std::thread::sleep(Duration::from_secs(30));
    assert!(
        alive(operator),
        "the operator stopped by itself:\n{}",
        output(&out_path)
    );
    assert!(
        child.try_wait().expect("status").is_none(),
        "make run returned:\n{}",
        output(&out_path)
    );

    // Leave no backup, restore or restored project behind for the suites after this one,
    // while the operator that owns their finalizers still runs.
    for restore in bed
        .kubectl_ok(&[
            "get",
            "projectrestores",
            "-o",
            &format!("jsonpath={{.items[?(@.spec.backup==\"{backup}\")].metadata.name}}"),
        ])
        .split_whitespace()
    {
        bed.kubectl_ok(&["delete", "projectrestore", restore, "--timeout=90s"]);
    }
    bed.kubectl_ok(&["delete", "accountbackup", &backup, "--timeout=90s"]);
    let _ = bed.kubectl(&[
        "delete",
        "namespace",
        &target,
        "demo-shop",
        "demo-blog",
        "--wait=false",
    ]);

    // Ctrl-C stops it cleanly: the operator ends, then make run.
    interrupt(libc::SIGINT);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("status") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "make run still runs 30 s after Ctrl-C:\n{}",
            output(&out_path)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let text = output(&out_path);
    assert!(!alive(operator), "the operator outlived Ctrl-C:\n{text}");
    assert!(
        text.contains("run: operator stopped"),
        "make run says the operator stopped:\n{text}"
    );
    assert!(
        text.contains("interrupted: finishing running reconciles"),
        "the operator shut down on its own terms, not killed:\n{text}"
    );
    eprintln!("make run ended {status} after Ctrl-C");
}

#[test]
fn make_run_on_a_cluster_where_the_user_lacks_rights_names_each_missing_permission_and_starts_nothing()
 {
    let bed = Bed::get();
    if bed.external {
        eprintln!("SKIPPED on REWIND_E2E_KUBECONFIG cluster: it impersonates a user of the bed");
        return;
    }
    let kubeconfig = bed.var("KUBECONFIG").expect("KUBECONFIG");
    let text = std::fs::read_to_string(kubeconfig).expect("kubeconfig");
    // The same cluster, as a user nobody has granted anything.
    let nobody = text.replacen("  user:\n", "  user:\n    as: rewind-e2e-nobody\n", 1);
    assert_ne!(
        nobody, text,
        "the kubeconfig has a user entry to impersonate from"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, nobody).expect("write kubeconfig");
    let run = Command::new("make")
        .args(["--no-print-directory", "run"])
        .current_dir(repo_root())
        .env("REWIND_BIN", env!("CARGO_BIN_EXE_rewind"))
        .envs(bed.envs())
        .env("KUBECONFIG", &path)
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .env_remove("MAKELEVEL")
        .stdin(Stdio::null())
        .output()
        .expect("make run");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(!run.status.success(), "make run went on:\n{printed}");
    for expected in [
        "this cluster lacks what the story needs",
        "permission: kubectl auth can-i create customresourcedefinitions.apiextensions.k8s.io → no",
        "permission: kubectl auth can-i create namespaces → no",
        "permission: kubectl auth can-i create pods/exec --all-namespaces → no",
    ] {
        assert!(
            printed.contains(expected),
            "{expected:?} missing:\n{printed}"
        );
    }
    assert!(
        !printed.contains("operator started"),
        "nothing starts on a cluster that lacks them:\n{printed}"
    );
}
