//! `make bench-backup`: backup throughput on the test bed (run with --ignored; not a timed test).
//! Objects per second end to end and the operator's peak RSS at 10,000 and 50,000 ConfigMaps
//! and Secrets; a database dump through exec beside plain pg_dump; 20 PVCs snapshotted at once.

mod support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{ObjectMeta, PostParams};
use serde_json::Value;
use support::operator::Operator;
use support::{Bed, unique};

fn seconds(status: &Value) -> f64 {
    let parse = |field: &str| {
        status[field]
            .as_str()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
    };
    match (parse("startedAt"), parse("completedAt")) {
        (Some(start), Some(end)) => {
            (end.as_millisecond() - start.as_millisecond()).max(1000) as f64 / 1000.0
        }
        _ => f64::NAN,
    }
}

fn run_backup(bed: &Bed, account: &str) -> (Value, Duration) {
    let name = unique("bench");
    let started = Instant::now();
    bed.apply(&format!("apiVersion: rewind.dev/v1alpha1\nkind: AccountBackup\nmetadata: {{name: {name}}}\nspec: {{account: {account}}}\n"));
    let status = bed.wait_until(
        "the bench backup",
        Duration::from_secs(900),
        || {
            let text = bed
                .kubectl(&["get", "accountbackup", &name, "-o", "jsonpath={.status}"])
                .ok()?;
            let status: Value = serde_json::from_str(&text).ok()?;
            ["Completed", "PartiallyFailed", "Failed"]
                .contains(&status["phase"].as_str()?)
                .then_some(status)
        },
        String::new,
    );
    (status, started.elapsed())
}

async fn create_objects(client: kube::Client, namespace: &str, from: usize, to: usize) {
    let configmaps: kube::Api<ConfigMap> = kube::Api::namespaced(client.clone(), namespace);
    let secrets: kube::Api<Secret> = kube::Api::namespaced(client, namespace);
    futures::stream::iter(from..to)
        .map(|i| {
            let (configmaps, secrets) = (configmaps.clone(), secrets.clone());
            async move {
                let meta = ObjectMeta {
                    name: Some(format!("obj-{i:06}")),
                    ..ObjectMeta::default()
                };
                let data = Some([("value".to_string(), format!("{i:064}"))].into());
                if i % 2 == 0 {
                    let _ = configmaps
                        .create(
                            &PostParams::default(),
                            &ConfigMap {
                                metadata: meta,
                                data,
                                ..ConfigMap::default()
                            },
                        )
                        .await;
                } else {
                    let _ = secrets
                        .create(
                            &PostParams::default(),
                            &Secret {
                                metadata: meta,
                                string_data: data,
                                ..Secret::default()
                            },
                        )
                        .await;
                }
            }
        })
        .buffer_unordered(48)
        .collect::<Vec<_>>()
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: make bench-backup"]
async fn bench_backup_objects_databases_and_volumes() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let bed = Bed::get();
    let operator = Operator::shared(&bed, &["--dump-timeout", "30m"]);
    // SAFETY: set before any other thread of this benchmark reads the environment.
    unsafe { std::env::set_var("KUBECONFIG", bed.var("KUBECONFIG").unwrap_or_default()) };
    let client = kube::Client::try_default().await.expect("client");
    let mut report = Vec::new();

    // 1. Many small objects.
    let account = unique("objects");
    let project = bed.project("objects", &account);
    let mut created = 0;
    for target in [10_000usize, 50_000] {
        let started = Instant::now();
        create_objects(client.clone(), &project.name, created, target).await;
        eprintln!(
            "created {} objects in {:.0?}",
            target - created,
            started.elapsed()
        );
        created = target;
        let (status, wall) = run_backup(&bed, &account);
        let resources = status["projects"][0]["resources"].as_u64().unwrap_or(0);
        let secs = seconds(&status);
        report.push(format!(
            "| {target} ConfigMaps+Secrets | {resources} objects in {secs:.1} s (wall {:.1} s) | **{:.0} objects/s** | operator peak RSS {:.0} MiB |",
            wall.as_secs_f64(),
            resources as f64 / secs,
            operator.peak_rss_mib()
        ));
    }
    drop(project);

    // 2. A database dump through exec into the repository, beside pg_dump to /dev/null.
    let account = unique("db");
    let project = bed.project("db", &account);
    let ns = project.name.clone();
    bed.bind_exec(&ns, &ns);
    let pg = |args: &[&str]| {
        let output = std::process::Command::new(format!(
            "{}/{}",
            bed.var("PG_BIN").unwrap_or("/usr/bin"),
            args[0]
        ))
        .args(&args[1..])
        .envs(bed.envs())
        .output()
        .expect("postgres tool");
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    pg(&["createdb", &ns]);
    pg(&["pgbench", "-q", "-i", "-s", "20", &ns]);
    let started = Instant::now();
    pg(&[
        "pg_dump",
        "--format=custom",
        "--no-owner",
        "--no-privileges",
        "--no-sync",
        "-d",
        &ns,
        "-f",
        "/dev/null",
    ]);
    let pg_dump_secs = started.elapsed().as_secs_f64();
    bed.apply(&format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: db-0, namespace: {ns}, annotations: {{rewind.dev/database: postgres}}}}\nspec: {{containers: [{{name: db, image: postgres}}]}}\n"));
    bed.wait_until(
        "db-0",
        Duration::from_secs(60),
        || {
            (bed.jsonpath(&["-n", &ns, "pod", "db-0"], "{.status.phase}")
                .as_deref()
                == Some("Running"))
            .then_some(())
        },
        String::new,
    );
    let (status, _) = run_backup(&bed, &account);
    let dump_bytes = status["databaseDumps"][0]["bytes"].as_u64().unwrap_or(0) as f64;
    let backup_secs = seconds(&status);
    report.push(format!(
        "| pgbench scale 20 dump ({:.0} MB, custom format) | pg_dump to /dev/null {pg_dump_secs:.1} s | through exec into the repository {backup_secs:.1} s (whole backup) | ratio {:.2} |",
        dump_bytes / 1e6,
        backup_secs / pg_dump_secs
    ));
    pg(&["dropdb", "--force", &ns]);
    drop(project);

    // 3. Twenty PVCs snapshotted in parallel.
    let account = unique("pvcs");
    let project = bed.project("pvcs", &account);
    let mut yaml = String::new();
    for i in 0..20 {
        yaml.push_str(&format!("---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: data-{i}, namespace: {}}}\nspec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 1Gi}}}}}}\n", project.name));
    }
    bed.apply(&yaml);
    bed.wait_until(
        "20 PVCs bound",
        Duration::from_secs(120),
        || {
            let phases = bed.jsonpath(&["-n", &project.name, "pvc"], "{.items[*].status.phase}")?;
            (phases.split_whitespace().filter(|p| *p == "Bound").count() == 20).then_some(())
        },
        String::new,
    );
    let (status, wall) = run_backup(&bed, &account);
    report.push(format!(
        "| 20 PVCs | {} snapshots taken and detached in {:.1} s (wall {:.1} s) | | |",
        status["volumeSnapshots"]
            .as_array()
            .map(Vec::len)
            .unwrap_or(0),
        seconds(&status),
        wall.as_secs_f64()
    ));
    drop(project);

    println!("\n| workload | result | rate | notes |\n|---|---|---|---|");
    for line in report {
        println!("{line}");
    }
}
