//! AccountBackup end to end on the test bed: a real operator process, real API server,
//! real CSI snapshots, real PostgreSQL over exec, a real repository.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::operator::Operator;
use support::{Bed, unique};
use tokio::io::AsyncReadExt;

const DONE: Duration = Duration::from_secs(120);

fn operator(bed: &Bed) -> &'static Operator {
    Operator::shared(
        bed,
        &[
            "--dump-timeout",
            "8s",
            "--hook-timeout",
            "8s",
            "--snapshot-timeout",
            "60s",
        ],
    )
}

fn label_project(bed: &Bed, namespace: &str, account: &str) {
    bed.kubectl_ok(&[
        "label",
        "namespace",
        namespace,
        &format!("rewind.dev/account={account}"),
        "--overwrite",
    ]);
}

fn create_backup(bed: &Bed, name: &str, account: &str) {
    bed.apply(&format!(
        "apiVersion: rewind.dev/v1alpha1\nkind: AccountBackup\nmetadata: {{name: {name}}}\nspec: {{account: {account}, notes: e2e}}\n"
    ));
}

fn backup_status(bed: &Bed, name: &str) -> Value {
    bed.kubectl(&["get", "accountbackup", name, "-o", "json"])
        .ok()
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .map(|object| object["status"].clone())
        .unwrap_or(Value::Null)
}

fn wait_phase(bed: &Bed, operator: &Operator, name: &str, phases: &[&str]) -> Value {
    bed.wait_until(
        &format!("AccountBackup {name} to reach {phases:?}"),
        DONE,
        || {
            let status = backup_status(bed, name);
            phases
                .contains(&status["phase"].as_str().unwrap_or_default())
                .then_some(status)
        },
        || {
            format!(
                "status: {}\n--- operator log ---\n{}",
                backup_status(bed, name),
                operator.log_tail()
            )
        },
    )
}

/// A new account whose one project holds a ConfigMap, and a Completed backup of it:
/// (project, backup name, status, repository snapshot).
fn completed_backup<'b>(
    bed: &'b Bed,
    operator: &Operator,
    prefix: &str,
) -> (support::TestNamespace<'b>, String, Value, String) {
    let account = unique(prefix);
    let project = bed.namespace(prefix);
    label_project(bed, &project.name, &account);
    bed.kubectl_ok(&[
        "-n",
        &project.name,
        "create",
        "configmap",
        "c",
        "--from-literal=k=v",
    ]);
    let name = unique(prefix);
    create_backup(bed, &name, &account);
    let status = wait_phase(bed, operator, &name, &["Completed"]);
    let snapshot = status["repositorySnapshot"]
        .as_str()
        .expect("snapshot")
        .to_string();
    (project, name, status, snapshot)
}

async fn read_stream(operator: &Operator, snapshot: &str, stream: &str) -> Vec<u8> {
    let repo = operator.repository().await;
    let mut reader = repo
        .read_stream(snapshot, stream)
        .await
        .expect("stream in the repository");
    let mut out = Vec::new();
    reader.read_to_end(&mut out).await.expect("read back");
    out
}

const WIDGET_CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.e2e.rewind.dev}
spec:
  group: e2e.rewind.dev
  names: {kind: Widget, plural: widgets, singular: widget}
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_stores_every_projects_manifests_sanitized_with_status_and_activity() {
    let bed = Bed::get();
    let operator = operator(&bed);
    bed.apply(WIDGET_CRD);
    bed.wait_established(&["widgets.e2e.rewind.dev"]);
    let account = unique("acct");
    let shop = bed.namespace("shop");
    let blog = bed.namespace("blog");
    for project in [&shop.name, &blog.name] {
        label_project(&bed, project, &account);
    }
    let ns = shop.name.as_str();
    bed.apply(&format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata: {{name: settings, namespace: {ns}}}
data: {{currency: EUR}}
---
apiVersion: v1
kind: Secret
metadata: {{name: api-key, namespace: {ns}, labels: {{rewind.dev/token: "true"}}}}
stringData: {{key: sk_live_abcdef0123456789}}
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {ns}}}
spec: {{selector: {{app: web}}, ports: [{{port: 80}}]}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {ns}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec: {{containers: [{{name: web, image: nginx}}]}}
---
apiVersion: e2e.rewind.dev/v1
kind: Widget
metadata: {{name: gizmo, namespace: {ns}}}
spec: {{size: 3}}
"#
    ));
    bed.wait_until(
        "the web pod",
        DONE,
        || {
            bed.jsonpath(&["-n", ns, "pods"], "{.items[0].status.phase}")
                .filter(|p| p == "Running")
        },
        || bed.describe(ns),
    );

    let name = unique("backup");
    bed.apply(&format!(
        "apiVersion: rewind.dev/v1alpha1\nkind: AccountBackup\nmetadata: {{name: {name}, annotations: {{rewind.dev/requested-by: alice@example.com}}}}\nspec: {{account: {account}, notes: e2e}}\n"
    ));
    let status = wait_phase(
        &bed,
        operator,
        &name,
        &["Completed", "PartiallyFailed", "Failed"],
    );
    assert_eq!(
        status["phase"],
        "Completed",
        "status: {status}\n{}",
        operator.log_tail()
    );
    assert_eq!(status["observedGeneration"], 1);
    assert!(status["restorableUntil"].is_string() && status["completedAt"].is_string());
    assert!(
        status["size"]["bytes"].as_u64().unwrap_or(0) > 0
            && status["logicalSize"]["bytes"].as_u64().unwrap_or(0) > 0
    );
    let ready = status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(ready["status"], "True", "{status}");
    let projects: Vec<&str> = status["projects"]
        .as_array()
        .map(|p| p.iter().filter_map(|p| p["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(projects.len(), 2, "{status}");
    let activity = status["activity"].to_string();
    for expected in ["started", &format!("project {ns} done"), "completed"] {
        assert!(
            activity.contains(expected),
            "activity lacks {expected:?}: {activity}"
        );
    }
    let progress = &status["progress"];
    assert_eq!(progress["itemsDone"], progress["itemsTotal"]);

    let snapshot = status["repositorySnapshot"].as_str().expect("snapshot id");
    let stream = read_stream(
        operator,
        snapshot,
        &format!("projects/{ns}/manifests.jsonl"),
    )
    .await;
    let objects: Vec<Value> = String::from_utf8_lossy(&stream)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let find = |kind: &str, name: &str| {
        objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .cloned()
    };
    let service = find("Service", "web").expect("the Service is backed up");
    assert!(
        service["spec"].get("clusterIP").is_none(),
        "clusterIP stripped: {service}"
    );
    assert!(
        find("Deployment", "web").is_some(),
        "the Deployment is backed up"
    );
    assert!(
        find("Widget", "gizmo").is_some(),
        "custom resources are backed up"
    );
    assert!(find("Secret", "api-key").is_some() && find("ConfigMap", "settings").is_some());
    assert!(
        !objects.iter().any(|o| o["kind"] == "Pod"
            || o["kind"] == "ReplicaSet"
            || o["kind"] == "Event"
            || o["kind"] == "EndpointSlice"),
        "controller-owned and derived objects are left out"
    );
    assert!(find("ConfigMap", "kube-root-ca.crt").is_none());
    for object in &objects {
        for field in [
            "uid",
            "resourceVersion",
            "managedFields",
            "creationTimestamp",
        ] {
            assert!(
                object["metadata"].get(field).is_none(),
                "{field} stripped from {object}"
            );
        }
        assert!(
            object.get("status").is_none(),
            "status stripped from {object}"
        );
    }
    let order: Vec<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    let position = |kind: &str| order.iter().position(|k| *k == kind).unwrap_or(usize::MAX);
    assert!(
        position("Secret") < position("Deployment") && position("Deployment") < position("Widget"),
        "restore order: {order:?}"
    );

    let manifests = operator
        .repository()
        .await
        .list_snapshots()
        .await
        .expect("ls");
    let ours = manifests
        .iter()
        .find(|m| m.id == snapshot)
        .expect("our snapshot");
    assert_eq!(ours.metadata.get("account"), Some(&account));
    assert_eq!(ours.metadata.get("backup"), Some(&name));
    assert_eq!(ours.metadata.get("notes").map(String::as_str), Some("e2e"));
    assert_eq!(
        ours.metadata.get("requested-by").map(String::as_str),
        Some("alice@example.com")
    );
    assert_eq!(status["requestedBy"], "alice@example.com");

    let printed = bed.kubectl_ok(&["get", "accountbackup", &name]);
    for column in [
        "ACCOUNT",
        "PHASE",
        "SIZE",
        "ADDED",
        "RESTORABLE-UNTIL",
        "NOTES",
        "AGE",
    ] {
        assert!(
            printed.contains(column),
            "printer column {column} missing: {printed}"
        );
    }
    // SIZE is what the backup holds, ADDED what it stored new in the repository.
    let holds = status["logicalSize"]["human"].as_str().unwrap_or("?");
    let added = status["size"]["human"].as_str().unwrap_or("?");
    assert!(
        printed.contains("e2e")
            && printed.contains(holds)
            && printed.contains(added)
            && printed.contains("Completed"),
        "notes, both sizes and phase show: {printed}"
    );
    assert!(
        bed.kubectl_ok(&["get", "rewind"]).contains(&name),
        "kubectl get rewind lists backups"
    );
    let events = bed.kubectl_ok(&[
        "get",
        "events",
        "-A",
        "--field-selector",
        &format!("involvedObject.name={name}"),
        "-o",
        "jsonpath={.items[*].reason}",
    ]);
    assert!(
        events.contains("Started") && events.contains("Completed"),
        "events: {events}"
    );
    bed.kubectl_ok(&[
        "delete",
        "accountbackup",
        &name,
        "--wait=true",
        "--timeout=60s",
    ]);
}

#[test]
fn account_without_projects_fails_naming_the_label() {
    let bed = Bed::get();
    let operator = operator(&bed);
    let name = unique("nobody");
    let account = unique("ghost");
    create_backup(&bed, &name, &account);
    let status = wait_phase(&bed, operator, &name, &["Failed"]);
    let ready = status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(ready["reason"], "NoProjects");
    assert!(
        ready["message"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!("rewind.dev/account={account}")),
        "{ready}"
    );
    bed.kubectl_ok(&["delete", "accountbackup", &name]);
}

/// Objects created and deleted at once (a tenant can do it to their own backups) must never
/// stall the shared watch: a backup created afterwards still runs to the end.
#[test]
fn backups_created_and_deleted_at_once_never_stall_the_controller() {
    let bed = Bed::get();
    let operator = operator(&bed);
    let account = unique("churn");
    let project = bed.project("churn", &account);
    for _ in 0..15 {
        let name = unique("churn");
        create_backup(&bed, &name, &account);
        let _ = bed.kubectl(&["delete", "accountbackup", &name, "--wait=false"]);
    }
    let name = unique("after-churn");
    create_backup(&bed, &name, &account);
    let status = wait_phase(
        &bed,
        operator,
        &name,
        &["Completed", "PartiallyFailed", "Failed"],
    );
    assert_eq!(status["phase"], "Completed", "{status}");
    bed.kubectl_ok(&["delete", "accountbackup", &name]);
    drop(project);
}

#[test]
fn busy_project_holds_the_backup_queued_until_released() {
    let bed = Bed::get();
    let operator = operator(&bed);
    let account = unique("busy");
    let project = bed.namespace("import");
    label_project(&bed, &project.name, &account);
    bed.kubectl_ok(&[
        "annotate",
        "namespace",
        &project.name,
        "rewind.dev/busy=importing data",
    ]);
    let name = unique("queued");
    create_backup(&bed, &name, &account);
    // The other tests of this suite run at once and may hold the operator's four slots for a
    // moment (then it is queued behind the limit first): wait until it names the busy project.
    bed.wait_until(
        &format!("AccountBackup {name} queued behind the busy project"),
        DONE,
        || {
            let status = backup_status(&bed, &name);
            (status["phase"] == "Queued"
                && status["queuedBehind"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("importing data"))
            .then_some(())
        },
        || {
            format!(
                "status: {}\n{}",
                backup_status(&bed, &name),
                operator.log_tail()
            )
        },
    );
    bed.kubectl_ok(&["annotate", "namespace", &project.name, "rewind.dev/busy-"]);
    let status = wait_phase(&bed, operator, &name, &["Completed"]);
    assert!(
        status["activity"].to_string().contains("queued behind"),
        "{status}"
    );
    bed.kubectl_ok(&["delete", "accountbackup", &name]);
}

#[test]
fn backup_spec_is_immutable_and_bad_input_is_refused_at_admission() {
    let bed = Bed::get();
    let _operator = operator(&bed);
    let name = unique("frozen");
    create_backup(&bed, &name, "frozen-account");
    let patched = bed.kubectl(&[
        "patch",
        "accountbackup",
        &name,
        "--type=merge",
        "-p",
        r#"{"spec":{"notes":"changed"}}"#,
    ]);
    assert!(
        patched.as_ref().is_err_and(|e| e.contains("immutable")),
        "{patched:?}"
    );
    let bad_ttl = bed.kubectl_with_stdin(&["apply", "-f", "-"], Some(format!("apiVersion: rewind.dev/v1alpha1\nkind: AccountBackup\nmetadata: {{name: {}}}\nspec: {{account: a, ttl: 7d}}\n", unique("ttl")).as_bytes()));
    assert!(
        bad_ttl
            .as_ref()
            .is_err_and(|e| e.contains("ttl must be a duration")),
        "{bad_ttl:?}"
    );
    let bad_account = bed.kubectl_with_stdin(&["apply", "-f", "-"], Some(format!("apiVersion: rewind.dev/v1alpha1\nkind: AccountBackup\nmetadata: {{name: {}}}\nspec: {{account: Not_A_Label}}\n", unique("acc")).as_bytes()));
    assert!(bad_account.is_err(), "an invalid account is refused");
    bed.kubectl_ok(&["delete", "accountbackup", &name]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_backup_releases_its_repository_snapshot() {
    let bed = Bed::get();
    let operator = operator(&bed);
    let (_project, name, _status, snapshot) = completed_backup(&bed, operator, "gone");
    assert!(
        operator
            .repository()
            .await
            .manifest(&snapshot)
            .await
            .is_ok()
    );
    bed.kubectl_ok(&[
        "delete",
        "accountbackup",
        &name,
        "--wait=true",
        "--timeout=60s",
    ]);
    assert!(
        operator
            .repository()
            .await
            .manifest(&snapshot)
            .await
            .is_err(),
        "the finalizer released the snapshot"
    );
}

#[test]
fn a_second_backup_of_the_same_account_waits_behind_the_first_then_runs() {
    let bed = Bed::get();
    if bed.external {
        eprintln!(
            "SKIPPED on REWIND_E2E_KUBECONFIG cluster: needs the bed's host exec for the slow hook"
        );
        return;
    }
    let operator = operator(&bed);
    let account = unique("twice");
    let project = bed.namespace("twice");
    label_project(&bed, &project.name, &account);
    bed.bind_exec(&project.name, &project.name);
    bed.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: slow\n  namespace: {}\n  annotations: {{rewind.dev/pre-backup: \"sleep 5\"}}\nspec: {{containers: [{{name: c, image: busybox}}]}}\n",
        project.name
    ));
    bed.wait_for_phase(&project.name, "pod", "slow", "Running", DONE);
    let first = unique("first");
    create_backup(&bed, &first, &account);
    wait_phase(&bed, operator, &first, &["Running"]);
    let second = unique("second");
    create_backup(&bed, &second, &account);
    let queued = wait_phase(&bed, operator, &second, &["Queued"]);
    assert!(
        queued["queuedBehind"]
            .as_str()
            .unwrap_or_default()
            .contains(&first),
        "queued behind the first by name: {queued}"
    );
    assert_eq!(
        wait_phase(&bed, operator, &first, &["Completed"])["phase"],
        "Completed"
    );
    assert_eq!(
        wait_phase(&bed, operator, &second, &["Completed"])["phase"],
        "Completed",
        "the second starts by itself"
    );
    bed.kubectl_ok(&["delete", "accountbackup", &first, &second]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_resumed_after_its_snapshot_was_committed_adopts_it_instead_of_copying_again() {
    let bed = Bed::get();
    let operator = operator(&bed);
    let (_project, name, first, snapshot) = completed_backup(&bed, operator, "adopt");
    // The operator's death between commit and status write, as the cluster sees it: the
    // snapshot is in the repository, the object still says Running after "copying".
    bed.kubectl_ok(&[
        "patch",
        "accountbackup",
        &name,
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Running","completedAt":null,"repositorySnapshot":null,"restorableUntil":null}}"#,
    ]);
    let resumed = wait_phase(&bed, operator, &name, &["Completed"]);
    assert_eq!(
        resumed["repositorySnapshot"], snapshot,
        "the committed snapshot is adopted: {resumed}"
    );
    assert!(
        resumed["activity"]
            .to_string()
            .contains("adopted it instead of copying again"),
        "the activity log says what happened: {}",
        resumed["activity"]
    );
    assert_eq!(
        resumed["projects"], first["projects"],
        "the status is rebuilt from the recorded outcome"
    );
    let uid = bed.kubectl_ok(&[
        "get",
        "accountbackup",
        &name,
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    let ours: Vec<String> = operator
        .repository()
        .await
        .list_snapshots()
        .await
        .expect("list")
        .into_iter()
        .filter(|m| m.metadata.get("backup-uid") == Some(&uid))
        .map(|m| m.id)
        .collect();
    assert_eq!(
        ours,
        [snapshot],
        "one snapshot for the backup, none orphaned"
    );
    bed.kubectl_ok(&["delete", "accountbackup", &name, "--timeout=60s"]);
}

#[test]
fn a_megabyte_of_notes_is_refused_at_admission_with_the_limit() {
    let bed = Bed::get();
    support::operator::Operator::install_crds(&bed);
    let name = unique("chatty");
    let notes = "x".repeat(1_500_000);
    let yaml = format!(
        "apiVersion: rewind.dev/v1alpha1\nkind: AccountBackup\nmetadata: {{name: {name}}}\nspec: {{account: chatty, notes: {notes}}}\n"
    );
    let refused = bed
        .kubectl_with_stdin(&["create", "-f", "-"], Some(yaml.as_bytes()))
        .expect_err("1.5 MB of notes is refused");
    assert!(
        refused.contains("spec.notes") && refused.contains("1024"),
        "the refusal names the field and its limit: {}",
        &refused[..refused.len().min(600)]
    );
}
