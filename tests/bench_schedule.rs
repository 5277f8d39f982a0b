//! `make bench-schedule`: 1,000 BackupSchedules on the same minute under a concurrency limit of
//! 10 (run with --ignored; not a timed test). Prints the time from the slot until every backup
//! completed, the most backups Running at once (from their startedAt/completedAt), and the
//! operator's peak RSS. `BENCH_SCHEDULES` and `BENCH_LIMIT` change the sizes.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use rewind::api::{AccountBackup, BackupSchedule};
use support::operator::{Launch, Operator, new_key_hex};
use support::{Bed, unique};

fn env_number(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The most intervals open at one instant (a sweep over starts and ends).
fn most_at_once(intervals: &[(Timestamp, Timestamp)]) -> usize {
    let mut edges: Vec<(Timestamp, i32)> = intervals
        .iter()
        .flat_map(|(start, end)| [(*start, 1), (*end, -1)])
        .collect();
    // At one instant an end goes before a start: touching intervals do not overlap.
    edges.sort();
    let (mut open, mut most) = (0i32, 0i32);
    for (_, step) in edges {
        open += step;
        most = most.max(open);
    }
    usize::try_from(most).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: make bench-schedule"]
async fn bench_a_thousand_schedules_on_the_same_minute() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let count = env_number("BENCH_SCHEDULES", 1000);
    let limit = env_number("BENCH_LIMIT", 10);
    let bed = Bed::get();
    Operator::install_crds(&bed);
    let namespace = unique("rewind-bench-schedule");
    bed.kubectl_ok(&["create", "namespace", &namespace]);
    let state = tempfile::tempdir().expect("temp dir");
    let key = new_key_hex();
    let limit_text = limit.to_string();
    let mut operator = Operator::spawn(
        &bed,
        &Launch {
            namespace: &namespace,
            identity: "bench",
            state_dir: state.path(),
            key_hex: &key,
            extra_args: &["--max-concurrent-backups", &limit_text],
            repository: None,
            env: &[],
        },
    );
    // SAFETY: set before any other thread of this benchmark reads the environment.
    unsafe { std::env::set_var("KUBECONFIG", bed.var("KUBECONFIG").unwrap_or_default()) };
    let client = kube::Client::try_default().await.expect("client");
    let run = unique("bsched");
    let run_label = format!("rewind.dev/bench={run}");

    // One account per schedule, each one project with one ConfigMap.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    futures::stream::iter(0..count)
        .map(|i| {
            let namespaces = namespaces.clone();
            let client = client.clone();
            let name = format!("{run}-{i}");
            let run = run.clone();
            async move {
                let labels = BTreeMap::from([
                    ("rewind.dev/account".to_string(), name.clone()),
                    ("rewind.dev/bench".to_string(), run),
                ]);
                let namespace = Namespace {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        labels: Some(labels),
                        ..ObjectMeta::default()
                    },
                    ..Namespace::default()
                };
                namespaces
                    .create(&PostParams::default(), &namespace)
                    .await
                    .expect("namespace");
                let config_map = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some("settings".into()),
                        ..ObjectMeta::default()
                    },
                    data: Some(BTreeMap::from([("a".to_string(), "b".to_string())])),
                    ..ConfigMap::default()
                };
                Api::<ConfigMap>::namespaced(client, &name)
                    .create(&PostParams::default(), &config_map)
                    .await
                    .expect("config map");
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;

    // Every schedule on the same minute, at least 45 s away so all exist before it comes.
    let now = Timestamp::now().as_second();
    let slot_second = (now + 45 + 59) / 60 * 60 + 60 * i64::from(count > 2000);
    let slot = Timestamp::from_second(slot_second).expect("slot");
    let cron = format!("{} {} * * *", slot.strftime("%-M"), slot.strftime("%-H"));
    let schedules: Api<BackupSchedule> = Api::all(client.clone());
    let created = std::time::Instant::now();
    futures::stream::iter(0..count)
        .map(|i| {
            let schedules = schedules.clone();
            let name = format!("{run}-{i}");
            let cron = cron.clone();
            let run = run.clone();
            async move {
                let schedule: BackupSchedule = serde_json::from_value(serde_json::json!({
                    "apiVersion": "rewind.dev/v1alpha1",
                    "kind": "BackupSchedule",
                    "metadata": {"name": name, "labels": {"rewind.dev/bench": run}},
                    "spec": {"account": name, "schedule": cron},
                }))
                .expect("schedule");
                schedules
                    .create(&PostParams::default(), &schedule)
                    .await
                    .expect("create schedule");
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    eprintln!(
        "created {count} accounts and schedules ({cron} UTC) in {:.1} s; waiting for {slot}",
        created.elapsed().as_secs_f64()
    );

    // Wait until every slot's backup finished; sample how many run while waiting.
    let backups: Api<AccountBackup> = Api::all(client.clone());
    let mut most_running_seen = 0;
    let finished = loop {
        let list = backups
            .list(&ListParams::default())
            .await
            .expect("list backups");
        let ours: Vec<&AccountBackup> = list
            .items
            .iter()
            .filter(|b| b.name_any().starts_with(&format!("{run}-")))
            .collect();
        let phase = |b: &AccountBackup| b.status.as_ref().and_then(|s| s.phase);
        let running = ours
            .iter()
            .filter(|b| phase(b) == Some(rewind::api::BackupPhase::Running))
            .count();
        most_running_seen = most_running_seen.max(running);
        let done = ours
            .iter()
            .filter(|b| {
                matches!(
                    phase(b),
                    Some(
                        rewind::api::BackupPhase::Completed
                            | rewind::api::BackupPhase::PartiallyFailed
                            | rewind::api::BackupPhase::Failed
                    )
                )
            })
            .count();
        if ours.len() == count && done == count {
            break list.items;
        }
        assert!(
            Timestamp::now().as_second() < slot_second + 3600,
            "the schedules did not finish within an hour: {done}/{} done\n{}",
            ours.len(),
            operator.log_tail()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let ours: Vec<&AccountBackup> = finished
        .iter()
        .filter(|b| b.name_any().starts_with(&format!("{run}-")))
        .collect();
    let intervals: Vec<(Timestamp, Timestamp)> = ours
        .iter()
        .filter_map(|b| {
            let status = b.status.as_ref()?;
            Some((
                status.started_at.as_ref()?.0,
                status.completed_at.as_ref()?.0,
            ))
        })
        .collect();
    let completed = ours
        .iter()
        .filter(|b| {
            b.status.as_ref().and_then(|s| s.phase) == Some(rewind::api::BackupPhase::Completed)
        })
        .count();
    let last_end = intervals.iter().map(|(_, end)| *end).max().unwrap_or(slot);
    let first_start = intervals
        .iter()
        .map(|(start, _)| *start)
        .min()
        .unwrap_or(slot);
    let total = (last_end.as_millisecond() - slot.as_millisecond()) as f64 / 1000.0;
    let first = (first_start.as_millisecond() - slot.as_millisecond()) as f64 / 1000.0;
    let most = most_at_once(&intervals);
    let rss = operator.peak_rss_mib();
    let log = std::fs::read_to_string(&operator.log).unwrap_or_default();
    let kept_log = support::repo_root().join("target/bench-schedule-operator.log");
    let _ = std::fs::write(&kept_log, &log);
    let retried = log.matches("reconcile failed; retrying").count();
    eprintln!(
        "operator log: {} ({retried} reconciles failed and were retried)",
        kept_log.display()
    );
    println!(
        "\n| schedules | limit | completed | slot → all completed | slot → first start | backups/s | most Running at once (from status times) | most Running seen by polling | operator peak RSS |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {count} | {limit} | {completed} | {total:.0} s | {first:.1} s | {:.1} | {most} | {most_running_seen} | {rss:.0} MiB |",
        count as f64 / total.max(0.001)
    );
    // Clean up first (a failed assertion must not leave a thousand schedules running), and
    // without a thousand repository prunes: the repository is a temp dir.
    operator.stop();
    let selector = ListParams::default().labels(&run_label);
    futures::stream::iter(ours.iter().map(|b| b.name_any()))
        .map(|name| {
            let backups = backups.clone();
            async move {
                let patch = serde_json::json!({"metadata": {"finalizers": null}});
                let _ = backups
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await;
                let _ = backups.delete(&name, &DeleteParams::default()).await;
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    let _ = schedules
        .delete_collection(&DeleteParams::background(), &selector)
        .await;
    let _ = namespaces
        .delete_collection(&DeleteParams::default(), &selector)
        .await;
    let _ = bed.kubectl(&["delete", "namespace", &namespace, "--wait=false"]);
    assert_eq!(completed, count, "every scheduled backup completed");
    assert!(
        most <= limit,
        "never more than {limit} Running at once ({most})"
    );
}

#[test]
fn touching_intervals_do_not_count_as_overlapping() {
    let t = |s: i64| Timestamp::from_second(s).expect("time");
    assert_eq!(most_at_once(&[(t(0), t(10)), (t(10), t(20))]), 1);
    assert_eq!(
        most_at_once(&[(t(0), t(10)), (t(5), t(20)), (t(6), t(7))]),
        3
    );
}
