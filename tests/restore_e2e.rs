//! ProjectRestore end to end: a realistic project backed up, mutated, and restored into a new,
//! isolated namespace with fresh tokens; the original is left as it is. Its database is a real
//! PostgreSQL pod on the bed's real node: the restored project gets its own, and Rewind loads
//! the dump into it — no database prepared by the test, no shared server.

mod support;

use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;
use support::operator::Operator;
use support::real_node::{RealNode, apply_in, psql_in, wait_ready};
use support::{Bed, status_of, unique};

const DONE: Duration = Duration::from_secs(150);

fn operator(bed: &Bed) -> &'static Operator {
    Operator::shared(bed, &["--dump-timeout", "60s", "--snapshot-timeout", "60s"])
}

/// Row count and a digest of every row of `customers`, read inside the database pod db-0.
fn checksum(bed: &Bed, namespace: &str) -> String {
    psql_in(
        bed,
        namespace,
        "db-0",
        "SELECT count(*) || ':' || md5(string_agg(id || '/' || name, ',' ORDER BY id)) FROM customers",
    )
}

fn wait_phase(bed: &Bed, operator: &Operator, kind: &str, name: &str, phases: &[&str]) -> Value {
    bed.wait_until(
        &format!("{kind} {name} to reach {phases:?}"),
        DONE,
        || {
            let status = status_of(bed, kind, name);
            phases
                .contains(&status["phase"].as_str().unwrap_or_default())
                .then_some(status)
        },
        || {
            format!(
                "status: {}\n--- operator log ---\n{}",
                status_of(bed, kind, name),
                operator.log_tail()
            )
        },
    )
}

fn secret_value(bed: &Bed, namespace: &str, secret: &str, key: &str) -> Vec<u8> {
    let encoded = bed
        .jsonpath(
            &["-n", namespace, "secret", secret],
            &format!("{{.data.{key}}}"),
        )
        .unwrap_or_default();
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap_or_default()
}

const WIDGET_CRD: &str = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: gadgets.e2e.rewind.dev}\nspec:\n  group: e2e.rewind.dev\n  names: {kind: Gadget, plural: gadgets}\n  scope: Namespaced\n  versions: [{name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}}]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn project_comes_back_isolated_sanitized_with_its_data_and_fresh_tokens() {
    let bed = Bed::get();
    let Some(csi_state) = bed.require("CSI_STATE_DIR", "comparing volume files") else {
        return;
    };
    let Some(node) = RealNode::of(&bed) else {
        return;
    };
    let operator = operator(&bed);
    bed.apply(WIDGET_CRD);
    bed.wait_established(&["gadgets.e2e.rewind.dev"]);
    let account = unique("shop");
    let original = bed.project("shop", &account);
    let ns = original.name.clone();
    let target = format!("{ns}-copy");
    // The project's database: a PostgreSQL pod on the real node (its data in an emptyDir, so
    // what comes back in the copy is the dump Rewind loads into the copy's own pod).
    apply_in(
        &bed,
        &ns,
        &node.postgres_pod("db-0", "    rewind.dev/database: postgres", "emptyDir: {}"),
    );
    wait_ready(&bed, &ns, "db-0");
    psql_in(
        &bed,
        &ns,
        "db-0",
        "CREATE TABLE customers (id int primary key, name text); INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1, 3000) g",
    );
    let rows_at_backup = checksum(&bed, &ns);
    bed.apply(&format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata: {{name: settings, namespace: {ns}}}
data: {{currency: EUR}}
---
apiVersion: v1
kind: Secret
metadata: {{name: payment-key, namespace: {ns}, labels: {{rewind.dev/token: "true"}}}}
stringData: {{key: sk_live_0123456789abcdefABCD, webhook: whsec_9f8e7d6c5b4a}}
---
apiVersion: v1
kind: Secret
metadata: {{name: device-token, namespace: {ns}, labels: {{rewind.dev/token: "true"}}}}
stringData: {{token: 0f1e2d3c4b5a69788796a5b4c3d2e1f0}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: app, namespace: {ns}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: reader, namespace: {ns}}}
rules: [{{apiGroups: [""], resources: [configmaps], verbs: [get]}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: app-reads, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: reader}}
subjects: [{{kind: ServiceAccount, name: app, namespace: {ns}}}]
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: files, namespace: {ns}}}
spec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 1Gi}}}}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {ns}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec: {{serviceAccountName: app, containers: [{{name: web, image: nginx}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {ns}}}
spec: {{selector: {{app: web}}, ports: [{{port: 80}}]}}
---
apiVersion: batch/v1
kind: CronJob
metadata: {{name: nightly-report, namespace: {ns}}}
spec:
  schedule: "0 1 * * *"
  jobTemplate: {{spec: {{template: {{spec: {{restartPolicy: Never, containers: [{{name: r, image: busybox}}]}}}}}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: web, namespace: {ns}}}
spec: {{rules: [{{host: shop.example.com, http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}]}}}}]}}
---
apiVersion: e2e.rewind.dev/v1
kind: Gadget
metadata: {{name: g1, namespace: {ns}}}
spec: {{color: blue}}
"#
    ));
    bed.wait_until(
        "the PVC to bind",
        DONE,
        || {
            (bed.jsonpath(&["-n", &ns, "pvc", "files"], "{.status.phase}")
                .as_deref()
                == Some("Bound"))
            .then_some(())
        },
        || bed.describe(&ns),
    );
    let volume = bed
        .jsonpath(&["-n", &ns, "pvc", "files"], "{.spec.volumeName}")
        .expect("volume");
    let handle = bed
        .jsonpath(&["pv", &volume], "{.spec.csi.volumeHandle}")
        .expect("handle");
    let file_contents = b"invoice 42\ninvoice 43\n".to_vec();
    std::fs::write(
        std::path::Path::new(&csi_state)
            .join(&handle)
            .join("invoices.txt"),
        &file_contents,
    )
    .expect("write file");
    let original_ip = bed
        .jsonpath(&["-n", &ns, "service", "web"], "{.spec.clusterIP}")
        .expect("cluster IP");
    let original_key = secret_value(&bed, &ns, "payment-key", "key");

    let backup = unique("shop-backup");
    bed.apply(&format!("apiVersion: rewind.dev/v1alpha1\nkind: AccountBackup\nmetadata: {{name: {backup}}}\nspec: {{account: {account}}}\n"));
    let backup_status = wait_phase(
        &bed,
        operator,
        "accountbackup",
        &backup,
        &["Completed", "PartiallyFailed", "Failed"],
    );
    assert_eq!(backup_status["phase"], "Completed", "{backup_status}");

    // Saturday night: the tenant breaks the project.
    bed.kubectl_ok(&["-n", &ns, "delete", "configmap", "settings"]);
    psql_in(&bed, &ns, "db-0", "DELETE FROM customers WHERE id > 10");

    let versions_before = bed.kubectl_ok(&[
        "-n",
        &ns,
        "get",
        "configmaps,secrets,services,deployments,cronjobs,ingresses,rolebindings,gadgets",
        "-o",
        "jsonpath={range .items[*]}{.kind}/{.metadata.name}={.metadata.resourceVersion} {end}",
    ]);
    let restore = unique("undo");
    bed.apply(&format!(
        "apiVersion: rewind.dev/v1alpha1\nkind: ProjectRestore\nmetadata: {{name: {restore}}}\nspec:\n  account: {account}\n  backup: {backup}\n  targetNamespaces: {{{ns}: {target}}}\n"
    ));
    let _cleanup = bed.adopt_namespace(&target);
    let status = wait_phase(
        &bed,
        operator,
        "projectrestore",
        &restore,
        &["Completed", "PartiallyFailed", "Failed"],
    );
    assert_eq!(
        status["phase"],
        "Completed",
        "{status}\n{}",
        operator.log_tail()
    );
    assert_eq!(status["targetNamespaces"][&ns], target);
    // Progress: done equals the total the backup recorded, bytes included, and the activity
    // log names the final rate.
    let progress = &status["progress"];
    let project_summary = backup_status["projects"]
        .as_array()
        .and_then(|projects| projects.iter().find(|p| p["name"] == ns.as_str()))
        .expect("the project's summary in the backup");
    assert_eq!(
        progress["bytesTotal"], project_summary["bytes"],
        "the total bytes come from the backup: {progress}"
    );
    assert!(
        progress["itemsDone"].as_u64().unwrap_or(0)
            >= project_summary["resources"].as_u64().unwrap_or(u64::MAX),
        "{progress}"
    );
    assert!(
        progress.get("estimatedCompletionTime").is_none(),
        "no estimate once finished: {progress}"
    );
    assert!(
        status["activity"].to_string().contains("items/s"),
        "the final rate is logged: {}",
        status["activity"]
    );

    let labels = bed
        .jsonpath(&["namespace", &target], "{.metadata.labels}")
        .unwrap_or_default();
    assert!(
        labels.contains(&account) && labels.contains(&backup),
        "account and restored-from labels: {labels}"
    );
    let policy = bed.kubectl_ok(&["-n", &target, "get", "networkpolicy", "-o", "json"]);
    assert!(
        policy.contains("Ingress") && policy.contains("Egress") && policy.contains("53"),
        "isolation policy: {policy}"
    );
    assert_eq!(
        bed.jsonpath(
            &["-n", &target, "configmap", "settings"],
            "{.data.currency}"
        )
        .as_deref(),
        Some("EUR"),
        "the deleted ConfigMap is back"
    );
    let restored_ip = bed
        .jsonpath(&["-n", &target, "service", "web"], "{.spec.clusterIP}")
        .expect("restored Service");
    assert_ne!(restored_ip, original_ip, "the Service got a new clusterIP");
    assert_eq!(
        bed.jsonpath(
            &["-n", &target, "cronjob", "nightly-report"],
            "{.spec.suspend}"
        )
        .as_deref(),
        Some("true"),
        "CronJobs come back suspended"
    );
    assert!(
        bed.kubectl(&["-n", &target, "get", "ingress", "web"])
            .is_err(),
        "the Ingress is not restored"
    );
    assert!(
        status["skipped"].to_string().contains("Ingress")
            && status["skipped"].to_string().contains("hosts"),
        "skipped with its reason: {status}"
    );
    assert_eq!(
        bed.jsonpath(
            &["-n", &target, "rolebinding", "app-reads"],
            "{.subjects[0].namespace}"
        )
        .as_deref(),
        Some(target.as_str())
    );
    assert_eq!(
        bed.jsonpath(&["-n", &target, "gadget", "g1"], "{.spec.color}")
            .as_deref(),
        Some("blue"),
        "custom resources come back"
    );
    assert!(
        bed.jsonpath(&["-n", &target, "deployment", "web"], "{.metadata.uid}")
            .is_some()
    );
    for object in ["configmap/settings", "service/web", "deployment/web"] {
        let managed = bed.kubectl_ok(&[
            "-n",
            &target,
            "get",
            object,
            "-o",
            "jsonpath={.metadata.ownerReferences}",
        ]);
        assert!(managed.is_empty(), "{object} has no stale owner references");
    }

    // Volume: same files, from the backup's snapshot; helper snapshot objects gone.
    let restored_volume = bed
        .jsonpath(&["-n", &target, "pvc", "files"], "{.spec.volumeName}")
        .expect("restored PVC bound");
    let restored_handle = bed
        .jsonpath(&["pv", &restored_volume], "{.spec.csi.volumeHandle}")
        .expect("handle");
    let restored_file = std::fs::read(
        std::path::Path::new(&csi_state)
            .join(&restored_handle)
            .join("invoices.txt"),
    )
    .expect("restored file");
    assert_eq!(restored_file, file_contents);
    assert!(
        bed.kubectl_ok(&["-n", &target, "get", "volumesnapshots", "-o", "name"])
            .trim()
            .is_empty(),
        "helper snapshots removed"
    );

    // Database: the copy's own PostgreSQL pod, on the real node, holds the rows as they were at
    // backup time.
    assert_eq!(
        bed.jsonpath(&["-n", &target, "pod", "db-0"], "{.spec.nodeName}")
            .as_deref(),
        Some(node.name.as_str()),
        "the restored database runs on the real node"
    );
    assert_eq!(
        checksum(&bed, &target),
        rows_at_backup,
        "restored rows equal the backup's"
    );

    // Tokens: same keys and lengths, new values; status names keys, never values.
    let new_key = secret_value(&bed, &target, "payment-key", "key");
    assert_eq!(new_key.len(), original_key.len());
    assert_ne!(
        new_key, original_key,
        "the old token does not work in the copy"
    );
    assert!(!secret_value(&bed, &target, "payment-key", "webhook").is_empty());
    let tokens = status["regeneratedTokens"].to_string();
    assert!(
        tokens.contains("payment-key")
            && tokens.contains("device-token")
            && tokens.contains("webhook"),
        "{tokens}"
    );
    let status_text = status.to_string();
    assert!(
        !status_text.contains("sk_live")
            && !status_text.contains(&String::from_utf8_lossy(&new_key).to_string()),
        "no token value in the status"
    );

    // The original project is untouched: every object keeps its resourceVersion.
    let versions_after = bed.kubectl_ok(&[
        "-n",
        &ns,
        "get",
        "configmaps,secrets,services,deployments,cronjobs,ingresses,rolebindings,gadgets",
        "-o",
        "jsonpath={range .items[*]}{.kind}/{.metadata.name}={.metadata.resourceVersion} {end}",
    ]);
    assert_eq!(
        versions_before, versions_after,
        "the restore did not write into the original project"
    );

    // A second restore of the same backup, into the default-named namespace, with a short life.
    let again = unique("again");
    bed.apply(&format!("apiVersion: rewind.dev/v1alpha1\nkind: ProjectRestore\nmetadata: {{name: {again}}}\nspec: {{account: {account}, backup: {backup}, restoreDatabases: false, expireAfter: 4s}}\n"));
    let second = wait_phase(
        &bed,
        operator,
        "projectrestore",
        &again,
        &["Completed", "PartiallyFailed", "Failed"],
    );
    assert_eq!(second["phase"], "Completed", "{second}");
    let second_target = second["targetNamespaces"][&ns]
        .as_str()
        .expect("default target")
        .to_string();
    assert!(
        second_target.starts_with(&format!("{ns}-restore-")),
        "{second_target}"
    );
    let second_volume = bed.jsonpath(&["-n", &second_target, "pvc", "files"], "{.status.phase}");
    assert_eq!(
        second_volume.as_deref(),
        Some("Bound"),
        "the same snapshot restores twice without collision"
    );
    bed.wait_until(
        "expireAfter to delete the second copy",
        DONE,
        || {
            bed.kubectl(&["get", "namespace", &second_target])
                .is_err()
                .then_some(())
        },
        || operator.log_tail(),
    );
    let expired = status_of(&bed, "projectrestore", &again);
    assert!(
        expired["conditions"]
            .to_string()
            .contains("ExpireAfterPassed"),
        "{expired}"
    );

    // The original project is untouched.
    assert!(
        bed.kubectl(&["-n", &ns, "get", "configmap", "settings"])
            .is_err(),
        "the original stays as it was"
    );
    assert_eq!(
        psql_in(&bed, &ns, "db-0", "SELECT count(*) FROM customers"),
        "10"
    );

    // A restore into an existing namespace is refused, naming what to do.
    let refused = unique("refused");
    bed.apply(&format!("apiVersion: rewind.dev/v1alpha1\nkind: ProjectRestore\nmetadata: {{name: {refused}}}\nspec:\n  account: {account}\n  backup: {backup}\n  targetNamespaces: {{{ns}: {ns}}}\n"));
    let status = wait_phase(&bed, operator, "projectrestore", &refused, &["Failed"]);
    let ready = status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(ready["reason"], "TargetNamespaceExists", "{status}");
    bed.kubectl_ok(&["delete", "projectrestore", &refused, &restore, &again]);
    bed.kubectl_ok(&["delete", "accountbackup", &backup, "--timeout=90s"]);
}

#[test]
fn restore_from_a_missing_backup_is_refused_with_what_to_do() {
    let bed = Bed::get();
    let operator = operator(&bed);
    let name = unique("orphan");
    bed.apply(&format!("apiVersion: rewind.dev/v1alpha1\nkind: ProjectRestore\nmetadata: {{name: {name}}}\nspec: {{account: nobody, backup: no-such-backup}}\n"));
    let status = wait_phase(&bed, operator, "projectrestore", &name, &["Failed"]);
    assert!(
        status["conditions"].to_string().contains("BackupNotFound")
            && status["conditions"].to_string().contains("kubectl get ab"),
        "{status}"
    );
    bed.kubectl_ok(&["delete", "projectrestore", &name]);
}

#[test]
fn restore_from_an_expired_backup_is_refused() {
    let bed = Bed::get();
    let operator = operator(&bed);
    let account = unique("brief");
    let _project = bed.project("brief", &account);
    let backup = unique("brief");
    bed.apply(&format!("apiVersion: rewind.dev/v1alpha1\nkind: AccountBackup\nmetadata: {{name: {backup}}}\nspec: {{account: {account}, ttl: 2s}}\n"));
    wait_phase(&bed, operator, "accountbackup", &backup, &["Expired"]);
    let name = unique("late");
    bed.apply(&format!("apiVersion: rewind.dev/v1alpha1\nkind: ProjectRestore\nmetadata: {{name: {name}}}\nspec: {{account: {account}, backup: {backup}}}\n"));
    let status = wait_phase(&bed, operator, "projectrestore", &name, &["Failed"]);
    assert!(
        status["conditions"].to_string().contains("BackupExpired"),
        "{status}"
    );
    bed.kubectl_ok(&["delete", "projectrestore", &name]);
    bed.kubectl_ok(&["delete", "accountbackup", &backup]);
}

#[test]
fn objects_come_back_in_dependency_order_so_a_bare_pod_finds_its_service_account() {
    let bed = Bed::get();
    let operator = operator(&bed);
    let account = unique("order");
    let project = bed.project("order", &account);
    let ns = project.name.as_str();
    // Alphabetically Pod < ServiceAccount: created in that order, the pod would be refused
    // (its ServiceAccount does not exist yet).
    bed.apply(&format!(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: runner, namespace: {ns}}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: job-runner, namespace: {ns}}}\nspec: {{serviceAccountName: runner, containers: [{{name: c, image: busybox}}]}}\n"
    ));
    let backup = unique("order");
    bed.apply(&format!("apiVersion: rewind.dev/v1alpha1\nkind: AccountBackup\nmetadata: {{name: {backup}}}\nspec: {{account: {account}}}\n"));
    wait_phase(&bed, operator, "accountbackup", &backup, &["Completed"]);
    let target = format!("{ns}-back");
    let restore = unique("order");
    bed.apply(&format!("apiVersion: rewind.dev/v1alpha1\nkind: ProjectRestore\nmetadata: {{name: {restore}}}\nspec:\n  account: {account}\n  backup: {backup}\n  targetNamespaces: {{{ns}: {target}}}\n"));
    let status = wait_phase(
        &bed,
        operator,
        "projectrestore",
        &restore,
        &["Completed", "PartiallyFailed"],
    );
    assert_eq!(status["phase"], "Completed", "{status}");
    assert_eq!(
        bed.jsonpath(
            &["-n", &target, "pod", "job-runner"],
            "{.spec.serviceAccountName}"
        )
        .as_deref(),
        Some("runner")
    );
    let _ = bed.kubectl(&["delete", "namespace", &target, "--wait=false"]);
    bed.kubectl_ok(&["delete", "projectrestore", &restore]);
    bed.kubectl_ok(&["delete", "accountbackup", &backup, "--timeout=90s"]);
}
