//! A large account on the test bed: 200 projects and 5,000 excluded PVCs. The backup reaches its
//! final phase with every status list bounded (the first 100 and counts; the repository's
//! outcome record keeps them all), and a project beyond the first 100 the status lists is still
//! restorable: the restore reads the whole list from the repository.

mod support;

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim};
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use serde_json::{Value, json};
use support::operator::Operator;
use support::{Bed, status_of, unique};

const PROJECTS: usize = 200;
const EXCLUDED_PVCS: usize = 5_000;

fn wait_finished(bed: &Bed, operator: &Operator, kind: &str, name: &str) -> Value {
    bed.wait_until(
        &format!("{kind} {name} to finish"),
        Duration::from_secs(600),
        || {
            let status = status_of(bed, kind, name);
            ["Completed", "PartiallyFailed", "Failed"]
                .contains(&status["phase"].as_str().unwrap_or_default())
                .then_some(status)
        },
        || {
            format!(
                "status: {}\n{}",
                status_of(bed, kind, name),
                operator.log_tail()
            )
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_of_200_projects_and_5000_excluded_pvcs_is_backed_up_and_restorable() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let bed = Bed::get();
    let operator = Operator::shared(&bed, &[]);
    // SAFETY: set before any other thread of this test reads the environment.
    unsafe { std::env::set_var("KUBECONFIG", bed.var("KUBECONFIG").unwrap_or_default()) };
    let client = kube::Client::try_default().await.expect("client");
    let account = unique("scale");
    let namespaces: kube::Api<Namespace> = kube::Api::all(client.clone());
    let names: Vec<String> = (0..PROJECTS)
        .map(|i| format!("{account}-p{i:03}"))
        .collect();
    futures::stream::iter(names.clone())
        .map(|name| {
            let namespaces = namespaces.clone();
            let account = account.clone();
            async move {
                let namespace = Namespace {
                    metadata: ObjectMeta {
                        name: Some(name),
                        labels: Some([("rewind.dev/account".to_string(), account)].into()),
                        ..ObjectMeta::default()
                    },
                    ..Namespace::default()
                };
                namespaces
                    .create(&PostParams::default(), &namespace)
                    .await
                    .expect("a project namespace");
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    // 5,000 PVCs left out on purpose (rewind.dev/exclude=true), spread over the projects; their
    // class does not exist, so nothing is provisioned for them.
    futures::stream::iter(0..EXCLUDED_PVCS)
        .map(|i| {
            let claims: kube::Api<PersistentVolumeClaim> =
                kube::Api::namespaced(client.clone(), &names[i % PROJECTS]);
            async move {
                let claim: PersistentVolumeClaim = serde_json::from_value(json!({
                    "metadata": {"name": format!("scratch-{i:05}"), "labels": {"rewind.dev/exclude": "true"}},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "storageClassName": "rewind-none",
                        "resources": {"requests": {"storage": "1Mi"}}
                    }
                }))
                .expect("a claim");
                claims
                    .create(&PostParams::default(), &claim)
                    .await
                    .expect("an excluded PVC");
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;

    let backup = unique("scale-backup");
    bed.apply(&format!("apiVersion: rewind.dev/v1alpha1\nkind: AccountBackup\nmetadata: {{name: {backup}}}\nspec: {{account: {account}}}\n"));
    let status = wait_finished(&bed, operator, "accountbackup", &backup);
    assert_eq!(status["phase"], "Completed", "{}", operator.log_tail());
    assert_eq!(status["projectCount"], PROJECTS as u64);
    assert_eq!(
        status["projects"].as_array().map(Vec::len),
        Some(100),
        "the first 100 listed"
    );
    let excluded = status["excluded"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        excluded.len(),
        100,
        "the first 99 and one entry saying how many more"
    );
    assert!(
        excluded.last().is_some_and(|more| more["kind"] == "More"
            && more["reason"]
                .as_str()
                .unwrap_or_default()
                .contains(&format!("{} more", EXCLUDED_PVCS - 99))),
        "{:?}",
        excluded.last()
    );
    let object = bed.kubectl_ok(&["get", "accountbackup", &backup, "-o", "json"]);
    assert!(
        object.len() < 512 * 1024,
        "the object stays small: {} bytes",
        object.len()
    );

    // A project beyond the first 100 the status lists comes back: the restore reads the whole
    // list from the repository.
    let late = names.last().expect("a project").clone();
    assert!(
        !status["projects"].to_string().contains(&late),
        "{late} is not among the listed projects"
    );
    let target = format!("{late}-r");
    let restore = unique("scale-restore");
    bed.apply(&format!("apiVersion: rewind.dev/v1alpha1\nkind: ProjectRestore\nmetadata: {{name: {restore}}}\nspec:\n  account: {account}\n  backup: {backup}\n  projects: [{late}]\n  targetNamespaces: {{{late}: {target}}}\n"));
    let restored = wait_finished(&bed, operator, "projectrestore", &restore);
    assert_eq!(restored["phase"], "Completed", "{restored}");
    // Its PVCs were excluded, beyond the first excluded items the backup's status lists: the
    // restore read the whole list and says why they are empty.
    let warnings = restored["warnings"].to_string();
    assert!(
        warnings.contains("was excluded from the backup") && !warnings.contains("has no snapshot"),
        "{warnings}"
    );
    assert!(
        bed.kubectl(&["get", "namespace", &target]).is_ok(),
        "the restored namespace exists"
    );

    let _ = bed.kubectl(&["delete", "namespace", &target, "--wait=false"]);
    // Deleting the large backup releases everything its full record lists, and finishes.
    bed.kubectl_ok(&["delete", "accountbackup", &backup, "--timeout=180s"]);
    let _ = namespaces
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels(&format!("rewind.dev/account={account}")),
        )
        .await;
}
