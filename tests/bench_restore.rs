//! `make bench-restore`: restore throughput on the test bed (run with --ignored; not a timed test).
//! A project of 5,000 objects and a ~200 MB PostgreSQL database: wall time, objects/s, peak RSS.

mod support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
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

    // 1. A project of 5,000 objects.
    let account = unique("many");
    let project = bed.project("many", &account);
    let configmaps: kube::Api<ConfigMap> = kube::Api::namespaced(client.clone(), &project.name);
    futures::stream::iter(0..5_000)
        .map(|i| {
            let configmaps = configmaps.clone();
            async move {
                let object = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(format!("cm-{i:05}")),
                        ..ObjectMeta::default()
                    },
                    data: Some([("value".to_string(), format!("{i:064}"))].into()),
                    ..ConfigMap::default()
                };
                let _ = configmaps.create(&PostParams::default(), &object).await;
            }
        })
        .buffer_unordered(48)
        .collect::<Vec<_>>()
        .await;
    let backup = unique("many-backup");
    bed.apply(&format!("apiVersion: rewind.dev/v1alpha1\nkind: AccountBackup\nmetadata: {{name: {backup}}}\nspec: {{account: {account}}}\n"));
    wait_done(&bed, "accountbackup", &backup);
    let target = format!("{}-r", project.name);
    let (status, wall) = timed_restore(&bed, &backup, &project.name, &target);
    let resources = status["restored"]["resources"].as_u64().unwrap_or(0);
    report.push(format!(
        "| project of 5,000 ConfigMaps | {resources} objects restored in {wall:.1} s wall | **{:.0} objects/s** (target: 5,000 in ≤ 30 s) | operator peak RSS {:.0} MiB |",
        resources as f64 / wall,
        operator.peak_rss_mib()
    ));
    let _ = bed.kubectl(&["delete", "namespace", &target, "--wait=false"]);
    drop(project);

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
