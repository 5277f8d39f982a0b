//! The chaos suite (`make chaos`; a short form runs in CI): a realistic account goes through
//! backup → restore cycles while the operator's two replicas are SIGKILLed at seeded moments,
//! a fault proxy between the operator and S3 fails 10% of requests (503, resets, 2–10 s
//! stalls, cut-off bodies), the API server is restarted once, a database dump hangs once and
//! a hook never returns once. After each cycle: the operation ended (none Running past the
//! operation timeout; a failure names its item), nothing is left that no live object accounts
//! for, the repository checks clean, and the restored rows, files, object counts equal the
//! source with every token regenerated exactly once. It prints a table and fails on any problem.
//!
//! REWIND_CHAOS_CYCLES (default 5) and REWIND_CHAOS_SEED (default: the clock) choose the run;
//! the seed is printed, and the same seed makes the same choices (kill moments, faults).

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::fault_proxy::{FaultProxy, Seeded};
use support::operator::{Launch, Operator, new_key_hex};
use support::real_node::{RealNode, apply_in, psql_in, wait_ready};
use support::{Bed, status_of, unique};

/// The operation timeout the replicas run with; nothing may stay Running past it.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(240);
/// ConfigMaps per project (two projects: 500 objects with the rest).
const CONFIG_MAPS: usize = 245;

/// The operator deployment under test: two replicas sharing a namespace and an S3 repository
/// reached through the fault proxy.
struct Deployment<'b> {
    bed: &'b Bed,
    namespace: String,
    state: tempfile::TempDir,
    key: String,
    repository: String,
    endpoint: String,
    replicas: Vec<(String, Option<Operator>)>,
    kills: u32,
}

const ARGS: &[&str] = &[
    "--operation-timeout",
    "240s",
    "--dump-timeout",
    "30s",
    "--hook-timeout",
    "15s",
    "--snapshot-timeout",
    "90s",
];

impl<'b> Deployment<'b> {
    fn launch(&mut self, index: usize) {
        let env = [
            ("AWS_ENDPOINT", self.endpoint.as_str()),
            ("AWS_ALLOW_HTTP", "true"),
        ];
        let identity = self.replicas[index].0.clone();
        let operator = Operator::spawn(
            self.bed,
            &Launch {
                namespace: &self.namespace,
                identity: &identity,
                state_dir: self.state.path(),
                key_hex: &self.key,
                extra_args: ARGS,
                repository: Some(&self.repository),
                env: &env,
            },
        );
        self.replicas[index].1 = Some(operator);
    }

    /// SIGKILLs replica `index` and starts it again.
    fn kill_and_restart(&mut self, index: usize) {
        if let Some(mut operator) = self.replicas[index].1.take() {
            operator.kill_hard();
            self.kills += 1;
        }
        self.launch(index);
    }

    fn log_tails(&self) -> String {
        self.replicas
            .iter()
            .filter_map(|(name, op)| {
                op.as_ref()
                    .map(|op| format!("--- {name} ---\n{}", op.log_tail()))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn is_final(status: &Value) -> bool {
    ["Completed", "PartiallyFailed", "Failed"]
        .contains(&status["phase"].as_str().unwrap_or_default())
}

/// Polls `kind/name` until it ends, killing replicas at the `kills` moments (seconds after
/// the start); gives up at the operation timeout plus a minute. None: it never ended.
fn run_through(
    deployment: &mut Deployment<'_>,
    kind: &str,
    name: &str,
    kills: &[(u64, usize)],
) -> Option<Value> {
    let started = Instant::now();
    let mut pending: Vec<(u64, usize)> = kills.to_vec();
    while started.elapsed() < OPERATION_TIMEOUT + Duration::from_secs(60) {
        let status = status_of(deployment.bed, kind, name);
        if is_final(&status) {
            return Some(status);
        }
        if let Some(position) = pending
            .iter()
            .position(|(at, _)| started.elapsed() >= Duration::from_secs(*at))
        {
            let (_, replica) = pending.remove(position);
            deployment.kill_and_restart(replica);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    None
}

/// The kube-apiserver of the bed stopped (SIGTERM) and started again with the same command
/// line, working directory and environment; the pid file kwokctl keeps is updated.
fn restart_api_server(bed: &Bed) {
    let kubeconfig = PathBuf::from(bed.var("KUBECONFIG").expect("KUBECONFIG"));
    let cluster = kubeconfig.parent().expect("cluster dir").to_path_buf();
    let pid_file = cluster.join("pids/kube-apiserver.pid");
    let pid = std::fs::read_to_string(&pid_file)
        .expect("kube-apiserver pid file")
        .trim()
        .to_string();
    let read = |what: &str| std::fs::read(format!("/proc/{pid}/{what}")).expect(what);
    let argv: Vec<String> = read("cmdline")
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let env: Vec<(String, String)> = read("environ")
        .split(|b| *b == 0)
        .filter_map(|e| {
            let text = String::from_utf8_lossy(e).into_owned();
            text.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).expect("cwd");
    // SIGTERM, and SIGKILL after 10 s: its graceful shutdown waits up to a minute for watches.
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let running = || {
        std::path::Path::new(&format!("/proc/{pid}")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z ")
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while running() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    if running() {
        let _ = Command::new("kill").args(["-KILL", &pid]).status();
        std::thread::sleep(Duration::from_millis(500));
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(cluster.join("logs/kube-apiserver.log"))
        .expect("apiserver log");
    let mut command = Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .current_dir(cwd)
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log);
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command.spawn().expect("start kube-apiserver again");
    std::fs::write(&pid_file, child.id().to_string()).expect("pid file");
    // Reaped if it ends while the suite runs; otherwise it outlives the suite, as the bed's.
    std::thread::spawn(move || child.wait());
    bed.wait_until(
        "the restarted API server to be ready",
        Duration::from_secs(120),
        || bed.kubectl(&["get", "--raw", "/readyz"]).ok(),
        String::new,
    );
    // Ready is not yet creatable: the admission policy relearns the Rewind kinds (503
    // "Resource kind … not found" for a few seconds), as after an install.
    Operator::wait_rewind_kinds_creatable(bed);
}

/// What a project holds, as the checks compare it.
#[derive(Debug, PartialEq, Eq)]
struct Contents {
    config_maps: usize,
    rows: Option<String>,
    files: Option<String>,
}

fn contents(bed: &Bed, namespace: &str, shop: bool) -> Contents {
    let config_maps = bed
        .kubectl_ok(&["-n", namespace, "get", "configmaps", "-o", "name"])
        .lines()
        .filter(|l| l.starts_with("configmap/cm-"))
        .count();
    Contents {
        config_maps,
        rows: shop.then(|| {
            psql_in(
                bed,
                namespace,
                "db-0",
                "SELECT count(*) || ':' || md5(string_agg(id || '/' || name, ',' ORDER BY id)) FROM customers",
            )
        }),
        files: shop.then(|| {
            bed.kubectl_ok(&[
                "-n",
                namespace,
                "exec",
                "uploads",
                "--",
                "sh",
                "-c",
                "cd /data && find . -type f | sort | xargs md5sum | md5sum",
            ])
        }),
    }
}

fn secret_value(bed: &Bed, namespace: &str, name: &str) -> String {
    bed.jsonpath(&["-n", namespace, "secret", name], "{.data.token}")
        .unwrap_or_default()
}

/// Everything left behind that no live object accounts for, in the suite's namespaces.
fn leaks(
    bed: &Bed,
    deployment: &Deployment<'_>,
    ours: &[&str],
    csi_state: &str,
    deleted_snapshots: &[String],
) -> Vec<String> {
    let mut found = Vec::new();
    // VolumeSnapshotContents whose VolumeSnapshot is gone.
    let contents: Value =
        serde_json::from_str(&bed.kubectl_ok(&["get", "volumesnapshotcontents", "-o", "json"]))
            .unwrap_or(Value::Null);
    for content in contents["items"].as_array().into_iter().flatten() {
        let reference = &content["spec"]["volumeSnapshotRef"];
        let namespace = reference["namespace"].as_str().unwrap_or_default();
        if !ours.contains(&namespace) && namespace != deployment.namespace {
            continue;
        }
        let snapshot = reference["name"].as_str().unwrap_or_default();
        if bed
            .kubectl(&["-n", namespace, "get", "volumesnapshot", snapshot])
            .is_err()
        {
            found.push(format!(
                "VolumeSnapshotContent {} (its VolumeSnapshot {namespace}/{snapshot} uid {} is gone; created {}, deletionPolicy {}, labels {}, finalizers {}, handle {})",
                content["metadata"]["name"].as_str().unwrap_or_default(),
                reference["uid"].as_str().unwrap_or_default(),
                content["metadata"]["creationTimestamp"].as_str().unwrap_or_default(),
                content["spec"]["deletionPolicy"].as_str().unwrap_or_default(),
                content["metadata"]["labels"],
                content["metadata"]["finalizers"],
                content["status"]["snapshotHandle"].as_str().unwrap_or_default(),
            ));
        }
    }
    for kind in ["pods", "persistentvolumeclaims", "volumesnapshots"] {
        let left = bed.kubectl_ok(&["-n", &deployment.namespace, "get", kind, "-o", "name"]);
        found.extend(
            left.lines()
                .map(|l| format!("{l} in the operator's namespace")),
        );
    }
    let leases = bed.kubectl_ok(&["-n", &deployment.namespace, "get", "leases", "-o", "name"]);
    found.extend(
        leases
            .lines()
            .filter(|l| !l.ends_with("/rewind-operator-leader"))
            .map(|l| format!("{l} with no operation running")),
    );
    // The physical snapshots of the deleted backups went with them.
    for handle in deleted_snapshots {
        let tarball = std::path::Path::new(csi_state)
            .join("snapshots")
            .join(format!("{handle}.tgz"));
        if tarball.exists() {
            found.push(format!("physical snapshot {handle} of a deleted backup"));
        }
    }
    found
}

fn repo_check(bed: &Bed, deployment: &Deployment<'_>) -> Result<String, String> {
    let key_file = deployment.state.path().join("key");
    let output = Command::new(env!("CARGO_BIN_EXE_rewind"))
        .args(["repo", "check", "--repo", &deployment.repository])
        .arg("--key-file")
        .arg(&key_file)
        .envs(bed.envs())
        .env("AWS_ENDPOINT", bed.var("S3_ENDPOINT").unwrap_or_default())
        .env("AWS_ALLOW_HTTP", "true")
        .output()
        .map_err(|e| e.to_string())?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

/// The account: a shop (PostgreSQL on a PVC, uploads on a PVC, tokens, a CronJob, ConfigMaps)
/// and a blog (ConfigMaps, a token, a database pod whose dump hangs the first time).
fn build_account<'b>(
    bed: &'b Bed,
    node: &RealNode,
    account: &str,
) -> (support::TestNamespace<'b>, support::TestNamespace<'b>) {
    let shop_guard = bed.project("chaos-shop", account);
    let blog_guard = bed.project("chaos-blog", account);
    let (shop, blog) = (shop_guard.name.clone(), blog_guard.name.clone());
    for namespace in [&shop, &blog] {
        let maps: String = (0..CONFIG_MAPS)
            .map(|i| format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cm-{i:03}}}\ndata: {{value: \"{i}\", payload: \"{}\"}}\n---\n", "x".repeat(200)))
            .collect();
        apply_in(bed, namespace, &maps);
        apply_in(
            bed,
            namespace,
            "apiVersion: v1\nkind: Secret\nmetadata: {name: api-token, labels: {rewind.dev/token: \"true\"}}\nstringData: {token: original-token-value-0123456789}\n",
        );
    }
    apply_in(
        bed,
        &shop,
        "apiVersion: v1\nkind: Secret\nmetadata: {name: deploy-token, labels: {rewind.dev/token: \"true\"}}\nstringData: {token: original-deploy-token-abcdef}\n---\napiVersion: batch/v1\nkind: CronJob\nmetadata: {name: nightly}\nspec:\n  schedule: \"0 3 * * *\"\n  jobTemplate: {spec: {template: {spec: {restartPolicy: Never, containers: [{name: report, image: busybox, command: [\"true\"]}]}}}}\n---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: pgdata}\nspec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: uploads}\nspec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 100Mi}}}\n",
    );
    // The pre-backup hook never returns on its third run (the pod's /tmp counts the runs).
    let hook = "n=$(cat /tmp/hook-runs 2>/dev/null || echo 0); n=$((n+1)); echo $n >/tmp/hook-runs; if [ $n -eq 3 ]; then sleep 3600; fi; psql -c CHECKPOINT";
    apply_in(
        bed,
        &shop,
        &node.postgres_pod(
            "db-0",
            &format!("    rewind.dev/database: postgres\n    rewind.dev/pre-backup: '{hook}'"),
            "persistentVolumeClaim: {claimName: pgdata}",
        ),
    );
    apply_in(
        bed,
        &shop,
        &node.shell_pod(
            "uploads",
            "if [ ! -f /data/ready ]; then mkdir -p /data/a/b; for i in 1 2 3 4 5 6 7 8 9 10; do head -c 40000 /dev/urandom > /data/a/b/f$i; done; echo hello > /data/readme; touch /data/ready; fi; exec sleep 2147483647",
            "",
            "    volumeMounts: [{name: data, mountPath: /data}]\n  volumes: [{name: data, persistentVolumeClaim: {claimName: uploads}}]\n",
        ),
    );
    // The dump hangs the first time it runs.
    apply_in(
        bed,
        &blog,
        &node.annotated_shell_pod(
            "dumper",
            "    rewind.dev/database: custom\n    rewind.dev/backup-command: 'if [ ! -e /tmp/hung ]; then touch /tmp/hung; sleep 3600; fi; echo blog-data'\n    rewind.dev/restore-command: 'cat >/dev/null'",
        ),
    );
    wait_ready(bed, &shop, "db-0");
    wait_ready(bed, &shop, "uploads");
    wait_ready(bed, &blog, "dumper");
    psql_in(
        bed,
        &shop,
        "db-0",
        "CREATE TABLE customers (id int primary key, name text); INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1, 3000) g",
    );
    bed.wait_until(
        "the uploads to be written",
        Duration::from_secs(60),
        || {
            bed.kubectl(&[
                "-n",
                &shop,
                "exec",
                "uploads",
                "--",
                "test",
                "-f",
                "/data/ready",
            ])
            .ok()
        },
        String::new,
    );
    (shop_guard, blog_guard)
}

#[test]
fn backups_and_restores_end_leak_nothing_and_restore_the_same_data_under_kills_s3_faults_and_an_api_server_restart()
 {
    let bed = Bed::get();
    let Some(node) = RealNode::of(&bed) else {
        return;
    };
    let (Some(s3), Some(bucket), Some(csi_state)) = (
        bed.require("S3_ENDPOINT", "the S3 server behind the fault proxy"),
        bed.require("S3_BUCKET", "the S3 bucket"),
        bed.require("CSI_STATE_DIR", "the CSI driver's snapshots"),
    ) else {
        return;
    };
    let cycles: usize = std::env::var("REWIND_CHAOS_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let seed: u64 = std::env::var("REWIND_CHAOS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(1)
        });
    eprintln!(
        "chaos: seed {seed}, {cycles} cycles (REWIND_CHAOS_SEED={seed} REWIND_CHAOS_CYCLES={cycles} makes the same choices)"
    );
    let mut rng = Seeded::new(seed);
    let upstream = s3.trim_start_matches("http://").to_string();
    let proxy = FaultProxy::start(&upstream, 0.10, seed ^ 0x00C0_FFEE);

    Operator::install_crds(&bed);
    let namespace = unique("chaos-op");
    bed.kubectl_ok(&["create", "namespace", &namespace]);
    let mut deployment = Deployment {
        bed: &bed,
        namespace: namespace.clone(),
        state: tempfile::tempdir().expect("temp dir"),
        key: new_key_hex(),
        repository: format!("s3://{bucket}/{}", unique("chaos")),
        endpoint: format!("http://127.0.0.1:{}", proxy.port),
        replicas: vec![("chaos-a".into(), None), ("chaos-b".into(), None)],
        kills: 0,
    };
    deployment.launch(0);
    deployment.launch(1);

    let account = unique("chaos");
    let (shop_guard, blog_guard) = build_account(&bed, &node, &account);
    let (shop, blog) = (shop_guard.name.clone(), blog_guard.name.clone());
    let source_shop = contents(&bed, &shop, true);
    let source_blog = contents(&bed, &blog, false);
    let api_restart_cycle = cycles / 2;
    let mut problems: Vec<String> = Vec::new();
    let mut outcomes: BTreeMap<String, u32> = BTreeMap::new();
    let mut leaked = 0usize;
    let mut check_errors = 0usize;
    let mut api_restarts = 0u32;
    let mut restored_into: Vec<String> = Vec::new();

    for cycle in 1..=cycles {
        let kills_now = |rng: &mut Seeded| -> Vec<(u64, usize)> {
            (0..rng.below(0, 3))
                .map(|_| (rng.below(1, 25), rng.below(0, 2) as usize))
                .collect()
        };
        // Backup.
        let backup = format!("chaos-{cycle}-{}", unique("b"));
        bed.apply(&format!("apiVersion: rewind.dev/v1alpha1\nkind: AccountBackup\nmetadata: {{name: {backup}}}\nspec: {{account: {account}}}\n"));
        if cycle == api_restart_cycle {
            std::thread::sleep(Duration::from_secs(rng.below(1, 6)));
            restart_api_server(&bed);
            api_restarts += 1;
        }
        let kills = kills_now(&mut rng);
        let Some(status) = run_through(&mut deployment, "accountbackup", &backup, &kills) else {
            problems.push(format!(
                "cycle {cycle}: backup {backup} still {} past the operation timeout",
                status_of(&bed, "accountbackup", &backup)["phase"]
            ));
            *outcomes.entry("backup never ended".into()).or_default() += 1;
            continue;
        };
        let phase = status["phase"].as_str().unwrap_or_default().to_string();
        let faults_seen: Vec<String> = status["activity"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["message"].as_str())
            .filter(|m| m.contains("did not finish") || m.contains("retry") || m.contains("resum"))
            .map(str::to_string)
            .collect();
        eprintln!(
            "chaos: cycle {cycle}: backup {phase} (uid {}); {faults_seen:?}",
            bed.jsonpath(&["accountbackup", &backup], "{.metadata.uid}")
                .unwrap_or_default()
        );
        *outcomes.entry(format!("backup {phase}")).or_default() += 1;
        if phase != "Completed" {
            let failed = status["failed"].as_array().cloned().unwrap_or_default();
            let named = !failed.is_empty()
                && failed.iter().all(|f| {
                    !f["name"].as_str().unwrap_or_default().is_empty()
                        && !f["reason"].as_str().unwrap_or_default().is_empty()
                });
            let message = status["conditions"].to_string();
            if !named && phase != "Failed" {
                problems.push(format!(
                    "cycle {cycle}: backup {phase} without items and reasons: {status}"
                ));
            }
            eprintln!(
                "chaos: cycle {cycle}: backup {phase}: {} {message}",
                status["failed"]
            );
        }

        // Restore both projects when the backup holds them whole.
        if phase == "Completed" {
            let (to_shop, to_blog) = (unique("chaos-shop-back"), unique("chaos-blog-back"));
            restored_into.extend([to_shop.clone(), to_blog.clone()]);
            let restore = format!("chaos-{cycle}-{}", unique("r"));
            bed.apply(&format!(
                "apiVersion: rewind.dev/v1alpha1\nkind: ProjectRestore\nmetadata: {{name: {restore}}}\nspec:\n  account: {account}\n  backup: {backup}\n  targetNamespaces: {{{shop}: {to_shop}, {blog}: {to_blog}}}\n"
            ));
            let kills = kills_now(&mut rng);
            match run_through(&mut deployment, "projectrestore", &restore, &kills) {
                None => problems.push(format!("cycle {cycle}: restore {restore} never ended")),
                Some(restored) => {
                    let restored_phase = restored["phase"].as_str().unwrap_or_default().to_string();
                    *outcomes
                        .entry(format!("restore {restored_phase}"))
                        .or_default() += 1;
                    if restored_phase != "Completed" {
                        problems.push(format!("cycle {cycle}: restore of a Completed backup ended {restored_phase}: {restored}"));
                    } else {
                        wait_ready(&bed, &to_shop, "db-0");
                        wait_ready(&bed, &to_shop, "uploads");
                        let back_shop = contents(&bed, &to_shop, true);
                        let back_blog = contents(&bed, &to_blog, false);
                        if back_shop != source_shop || back_blog != source_blog {
                            problems.push(format!("cycle {cycle}: restored {back_shop:?} / {back_blog:?}, source {source_shop:?} / {source_blog:?}"));
                        }
                        // Every token regenerated, exactly once: a new value, written by one create.
                        for (from, to, secret) in [
                            (&shop, &to_shop, "api-token"),
                            (&shop, &to_shop, "deploy-token"),
                            (&blog, &to_blog, "api-token"),
                        ] {
                            if secret_value(&bed, from, secret) == secret_value(&bed, to, secret) {
                                problems.push(format!(
                                    "cycle {cycle}: {to}/{secret} kept the original token"
                                ));
                            }
                            // One writer, the restore's create (a create is recorded as an Update).
                            let managers = bed
                                .jsonpath(
                                    &["-n", to, "secret", secret],
                                    "{.metadata.managedFields[*].manager}",
                                )
                                .unwrap_or_default();
                            if managers.split_whitespace().collect::<Vec<_>>() != ["rewind-restore"]
                            {
                                problems.push(format!("cycle {cycle}: {to}/{secret} was written by {managers:?}, not once by the restore"));
                            }
                        }
                        if restored["regeneratedTokenCount"].as_u64().unwrap_or(0) != 3 {
                            problems.push(format!(
                                "cycle {cycle}: regeneratedTokenCount {} (3 tokens)",
                                restored["regeneratedTokenCount"]
                            ));
                        }
                    }
                }
            }
            let _ = bed.kubectl(&["delete", "projectrestore", &restore, "--timeout=120s"]);
            let _ = bed.kubectl(&["delete", "namespace", &to_shop, &to_blog, "--timeout=180s"]);
        }
        // The backup goes again, through its finalizer, under the same faults.
        let handles: Vec<String> = status["volumeSnapshots"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v["snapshotHandle"].as_str().map(str::to_string))
            .collect();
        if bed
            .kubectl(&["delete", "accountbackup", &backup, "--timeout=180s"])
            .is_err()
        {
            problems.push(format!(
                "cycle {cycle}: backup {backup} was not deleted within 180 s: {}",
                status_of(&bed, "accountbackup", &backup)
            ));
        }

        // After the cycle: nothing left over, the repository clean (read without faults).
        // Cleanup that is under way (a temporary content, a physical snapshot) gets a minute.
        let settle = Instant::now() + Duration::from_secs(60);
        let found = loop {
            // The restores' helper contents point into their (deleted) target namespaces.
            let mut ours: Vec<&str> = vec![&shop, &blog];
            ours.extend(restored_into.iter().map(String::as_str));
            let found = leaks(&bed, &deployment, &ours, &csi_state, &handles);
            if found.is_empty() || Instant::now() > settle {
                break found;
            }
            std::thread::sleep(Duration::from_secs(2));
        };
        leaked += found.len();
        problems.extend(
            found
                .into_iter()
                .map(|l| format!("cycle {cycle}: leak: {l}")),
        );
        proxy
            .enabled
            .store(false, std::sync::atomic::Ordering::Relaxed);
        if let Err(report) = repo_check(&bed, &deployment) {
            check_errors += 1;
            problems.push(format!("cycle {cycle}: rewind repo check: {report}"));
        }
        proxy
            .enabled
            .store(true, std::sync::atomic::Ordering::Relaxed);
        eprintln!(
            "chaos: cycle {cycle} done: {outcomes:?}, {} kills, {}",
            deployment.kills,
            proxy.counts.summary()
        );
    }

    eprintln!(
        "\n| cycles | kills | S3 faults injected | API server restarts | outcomes | leaks | check errors |"
    );
    eprintln!("|---|---|---|---|---|---|---|");
    eprintln!(
        "| {cycles} | {} | {} | {} | {} | {leaked} | {check_errors} |",
        deployment.kills,
        proxy.counts.summary(),
        api_restarts,
        outcomes
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    eprintln!("seed {seed}");
    if !problems.is_empty() {
        eprintln!("{}", deployment.log_tails());
        // The whole logs, for a failure the tails do not explain.
        if let Ok(dir) = std::env::var("REWIND_CHAOS_LOG_DIR") {
            let _ = std::fs::create_dir_all(&dir);
            for (name, _) in &deployment.replicas {
                let log = deployment.state.path().join(format!("{name}.log"));
                let _ = std::fs::copy(&log, std::path::Path::new(&dir).join(format!("{name}.log")));
            }
            eprintln!("the replicas' whole logs are in {dir}");
        }
    }
    drop((shop_guard, blog_guard));
    assert!(
        problems.is_empty(),
        "chaos found {} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}
