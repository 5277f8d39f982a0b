//! `make bench-restore`: restore throughput on the test bed (run with --ignored; not a timed test).
//! Projects of 10,000 and 50,000 ConfigMaps and Secrets (`BENCH_RESTORE_OBJECTS=10000,50000`):
//! the raw create rate of the same objects beside Rewind's restore, the ratio, the estimate's
//! error at 20%, peak RSS; then a ~200 MB PostgreSQL database.

mod support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{ObjectMeta, PostParams};
use serde_json::Value;
use support::operator::Operator;
use support::{Bed, unique};

fn wait_done(bed: &Bed, kind: &str, name: &str) -> Value {
    bed.wait_until(
        &format!("{kind} {name}"),
        Duration::from_secs(900),
        || {
            let text = bed
                .kubectl(&["get", kind, name, "-o", "jsonpath={.status}"])
                .ok()?;
            let status: Value = serde_json::from_str(&text).ok()?;
            ["Completed", "PartiallyFailed", "Failed"]
                .contains(&status["phase"].as_str()?)
                .then_some(status)
        },
        String::new,
    )
}

fn timed_restore(bed: &Bed, backup: &str, project: &str, target: &str) -> (Value, f64) {
    let name = unique("bench-restore");
    let account = bed
        .jsonpath(&["accountbackup", backup], "{.spec.account}")
        .expect("the backup's account");
    let started = Instant::now();
    bed.apply(&format!("apiVersion: rewind.dev/v1alpha1\nkind: ProjectRestore\nmetadata: {{name: {name}}}\nspec:\n  account: {account}\n  backup: {backup}\n  targetNamespaces: {{{project}: {target}}}\n"));
    let status = wait_done(bed, "projectrestore", &name);
    (status, started.elapsed().as_secs_f64())
}

/// Creates `count` objects, half ConfigMaps and half Secrets, into `namespace` with 32
/// concurrent writers; returns how many were created and the seconds it took.
async fn create_objects(client: &kube::Client, namespace: &str, count: usize) -> (usize, f64) {
    let configmaps: kube::Api<ConfigMap> = kube::Api::namespaced(client.clone(), namespace);
    let secrets: kube::Api<Secret> = kube::Api::namespaced(client.clone(), namespace);
    let started = Instant::now();
    let created = futures::stream::iter(0..count)
        .map(|i| {
            let (configmaps, secrets) = (configmaps.clone(), secrets.clone());
            async move {
                let metadata = ObjectMeta {
                    name: Some(format!("obj-{i:06}")),
                    ..ObjectMeta::default()
                };
                let value = format!("{i:064}");
                let result = if i % 2 == 0 {
                    let object = ConfigMap {
                        metadata,
                        data: Some([("value".to_string(), value)].into()),
                        ..ConfigMap::default()
                    };
                    configmaps
                        .create(&PostParams::default(), &object)
                        .await
                        .map(|_| ())
                } else {
                    let object = Secret {
                        metadata,
                        string_data: Some([("value".to_string(), value)].into()),
                        ..Secret::default()
                    };
                    secrets
                        .create(&PostParams::default(), &object)
                        .await
                        .map(|_| ())
                };
                result.is_ok()
            }
        })
        .buffer_unordered(32)
        .filter(|ok| futures::future::ready(*ok))
        .count()
        .await;
    (created, started.elapsed().as_secs_f64())
}

/// A restore timed from creation to its final phase, with its estimate sampled: the first
/// estimated completion time the status showed once 20% of the items were done, as an error
/// against the real end (percent of the real duration).
fn timed_restore_with_estimate(
    bed: &Bed,
    backup: &str,
    project: &str,
    target: &str,
) -> (Value, f64, Option<f64>) {
    let name = unique("bench-restore");
    let account = bed
        .jsonpath(&["accountbackup", backup], "{.spec.account}")
        .expect("the backup's account");
    let created = jiff::Timestamp::now();
    let started = Instant::now();
    bed.apply(&format!("apiVersion: rewind.dev/v1alpha1\nkind: ProjectRestore\nmetadata: {{name: {name}}}\nspec:\n  account: {account}\n  backup: {backup}\n  targetNamespaces: {{{project}: {target}}}\n"));
    let mut estimate: Option<jiff::Timestamp> = None;
    let status = loop {
        if started.elapsed() > Duration::from_secs(1800) {
            panic!("restore {name} did not finish in 30 minutes");
        }
        let text = bed
            .kubectl(&["get", "projectrestore", &name, "-o", "jsonpath={.status}"])
            .unwrap_or_default();
        let status: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if ["Completed", "PartiallyFailed", "Failed"]
            .contains(&status["phase"].as_str().unwrap_or(""))
        {
            break status;
        }
        let progress = &status["progress"];
        let (done, total) = (
            progress["itemsDone"].as_u64().unwrap_or(0),
            progress["itemsTotal"].as_u64().unwrap_or(0),
        );
        if estimate.is_none()
            && total > 0
            && done * 5 >= total
            && let Some(at) = progress["estimatedCompletionTime"].as_str()
        {
            estimate = at.parse().ok();
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let wall = started.elapsed().as_secs_f64();
    let error = estimate.map(|at| {
        let estimated = at.duration_since(created).as_secs_f64();
        (estimated - wall) / wall * 100.0
    });
    (status, wall, error)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: make bench-restore"]
async fn bench_restore_objects_and_database() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let bed = Bed::get();
    let operator = Operator::shared(&bed, &["--dump-timeout", "30m"]);
    // SAFETY: set before any other thread of this benchmark reads the environment.
    unsafe { std::env::set_var("KUBECONFIG", bed.var("KUBECONFIG").unwrap_or_default()) };
    let client = kube::Client::try_default().await.expect("client");
    let mut report = Vec::new();
    let sizes: Vec<usize> = std::env::var("BENCH_RESTORE_OBJECTS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10_000, 50_000]);

    // 1. Projects of N ConfigMaps and Secrets: the raw create rate (the ceiling: the same kinds
    //    created by 32 concurrent writers into a fresh namespace) beside Rewind's restore.
    for count in sizes {
        let account = unique("many");
        let project = bed.project("many", &account);
        create_objects(&client, &project.name, count).await;
        let backup = unique("many-backup");
        bed.apply(&format!("apiVersion: rewind.dev/v1alpha1\nkind: AccountBackup\nmetadata: {{name: {backup}}}\nspec: {{account: {account}}}\n"));
        wait_done(&bed, "accountbackup", &backup);
        let raw_ns = format!("{}-raw", project.name);
        bed.kubectl(&["create", "namespace", &raw_ns])
            .expect("raw namespace");
        bed.wait_until(
            "the raw namespace's default ServiceAccount",
            Duration::from_secs(60),
            || {
                bed.kubectl(&["-n", &raw_ns, "get", "serviceaccount", "default"])
                    .ok()
                    .map(|_| ())
            },
            String::new,
        );
        let (raw_created, raw_wall) = create_objects(&client, &raw_ns, count).await;
        let raw_rate = raw_created as f64 / raw_wall;
        let _ = bed.kubectl(&["delete", "namespace", &raw_ns, "--wait=false"]);
        let target = format!("{}-r", project.name);
        let (status, wall, estimate_error) =
            timed_restore_with_estimate(&bed, &backup, &project.name, &target);
        let resources = status["restored"]["resources"].as_u64().unwrap_or(0);
        let rate = resources as f64 / wall;
        report.push(format!(
            "| project of {count} ConfigMaps and Secrets | raw creates {raw_rate:.0}/s; restored {resources} in {wall:.1} s: **{rate:.0}/s** | **{:.0}%** of the raw rate (target ≥ 70%) | estimate at 20%: {} (target ±25%); operator peak RSS {:.0} MiB |",
            rate / raw_rate * 100.0,
            estimate_error.map_or("none shown".to_string(), |e| format!("{e:+.0}%")),
            operator.peak_rss_mib()
        ));
        println!("{}", report.last().map(String::as_str).unwrap_or_default());
        let _ = bed.kubectl(&["delete", "namespace", &target, "--wait=false"]);
        drop(project);
    }

    // 2. A ~200 MB database (pgbench scale 14).
    let account = unique("bigdb");
    let project = bed.project("bigdb", &account);
    let ns = project.name.clone();
    let target = format!("{ns}-r");
    bed.bind_exec(&ns, &ns);
    bed.bind_exec(&target, &target);
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
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    };
    pg(&["createdb", &ns]);
    pg(&["createdb", &target]);
    pg(&["pgbench", "-q", "-i", "-s", "14", &ns]);
    let size = pg(&[
        "psql",
        "-X",
        "-A",
        "-t",
        "-d",
        &ns,
        "-c",
        "SELECT pg_size_pretty(pg_database_size(current_database()))",
    ]);
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
    let backup = unique("bigdb-backup");
    bed.apply(&format!("apiVersion: rewind.dev/v1alpha1\nkind: AccountBackup\nmetadata: {{name: {backup}}}\nspec: {{account: {account}}}\n"));
    let backup_status = wait_done(&bed, "accountbackup", &backup);
    let (status, wall) = timed_restore(&bed, &backup, &ns, &target);
    report.push(format!(
        "| PostgreSQL database of {size} (dump {:.1} MB) | restored ({}) in {wall:.1} s wall | | operator peak RSS {:.0} MiB |",
        backup_status["databaseDumps"][0]["bytes"].as_f64().unwrap_or(0.0) / 1e6,
        status["phase"].as_str().unwrap_or("?"),
        operator.peak_rss_mib()
    ));
    pg(&["dropdb", "--force", &ns]);
    pg(&["dropdb", "--force", &target]);
    let _ = bed.kubectl(&["delete", "namespace", &target, "--wait=false"]);
    drop(project);

    println!("\n| workload | result | rate | notes |\n|---|---|---|---|");
    for line in report {
        println!("{line}");
    }
}
