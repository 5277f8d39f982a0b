//! The work of a running restore, per project: namespace, manifests (tokens regenerated,
//! PVCs from snapshots), helper cleanup, then databases. Every step is idempotent
//! (server-side apply, deterministic names), so a resumed restore simply runs it again.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use kube::api::{DynamicObject, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::Discovery;
use kube::{Api, Client};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::namespace;
use super::rewrite::{Rewritten, rewrite_for_restore};
use super::selector;
use super::status::RestoreOutcome;
use super::tokens::regenerate_bytes;
use super::volumes::{helper_name, prepare_snapshot, pvc_from_snapshot, remove_helpers};
use crate::api::{AccountBackup, ItemOutcome, ProjectRestore, RegeneratedToken, TOKEN_LABEL};
use crate::archive::layout::manifest_stream;
use crate::archive::store::SnapshotStore;
use crate::context::StepTimeouts;

/// The field manager of restored objects.
pub const RESTORE_MANAGER: &str = "rewind-restore";

fn item(project: &str, object: &Value, reason: String) -> ItemOutcome {
    ItemOutcome {
        project: project.to_string(),
        kind: object["kind"].as_str().unwrap_or("Object").to_string(),
        name: object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        reason,
    }
}

/// Whether a Secret is a resource token: labelled `rewind.dev/token=true` or matched by the backup's selector (pure).
pub fn is_token(object: &Value, backup: &AccountBackup) -> bool {
    if object["kind"].as_str() != Some("Secret") || object["apiVersion"].as_str() != Some("v1") {
        return false;
    }
    let labels: BTreeMap<String, String> =
        serde_json::from_value(object["metadata"]["labels"].clone()).unwrap_or_default();
    labels.get(TOKEN_LABEL).map(String::as_str) == Some("true")
        || backup
            .spec
            .token_selector
            .as_ref()
            .is_some_and(|s| selector::matches(s, &labels))
}

/// Gives every `data` value of a token Secret a new random value; returns the keys (pure apart from randomness).
pub fn regenerate_token(object: &mut Value) -> Vec<String> {
    let mut keys = Vec::new();
    let engine = base64::engine::general_purpose::STANDARD;
    if let Some(data) = object.get_mut("data").and_then(Value::as_object_mut) {
        for (key, value) in data.iter_mut() {
            let old = value
                .as_str()
                .and_then(|v| engine.decode(v).ok())
                .unwrap_or_default();
            *value = Value::String(engine.encode(regenerate_bytes(&old)));
            keys.push(key.clone());
        }
    }
    if let Some(data) = object.get_mut("stringData").and_then(Value::as_object_mut) {
        for (key, value) in data.iter_mut() {
            let old = value.as_str().unwrap_or_default().to_string();
            *value = Value::String(super::tokens::regenerate_text(&old));
            keys.push(key.clone());
        }
    }
    keys.sort();
    keys
}

/// Everything one restore needs to know.
pub struct RestoreJob<'a> {
    /// The restore.
    pub restore: &'a ProjectRestore,
    /// Its backup.
    pub backup: &'a AccountBackup,
    /// Project → target namespace.
    pub targets: &'a BTreeMap<String, String>,
    /// Step time limits.
    pub timeouts: StepTimeouts,
}

async fn apply_object(
    client: &Client,
    discovery: &Discovery,
    namespace: &str,
    object: &Value,
) -> Result<(), String> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let Some((resource, _)) = discovery.resolve_gvk(&GroupVersionKind::gvk(group, version, kind))
    else {
        return Err(format!(
            "the cluster does not serve {api_version} {kind}: install its CRD, then restore again"
        ));
    };
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
    let object: DynamicObject = serde_json::from_value(object.clone())
        .map_err(|e| format!("the backed-up manifest is not an object: {e}"))?;
    let params = PostParams {
        field_manager: Some(RESTORE_MANAGER.to_string()),
        ..PostParams::default()
    };
    // Create only: the operator may create a project's objects but never patch one (its
    // ClusterRole has no patch on them). The namespace is the restore's own, so an object that
    // exists already was created by an earlier attempt of this restore and is kept as it is.
    match api.create(&params, &object).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(e) => Err(format!("creating it failed: {e}")),
    }
}

/// Restores every target project; items that fail are listed, the rest goes on.
pub async fn run(
    client: &Client,
    store: &dyn SnapshotStore,
    job: &RestoreJob<'_>,
) -> Result<RestoreOutcome, String> {
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .map_err(|e| format!("API discovery failed: {e}"))?;
    let status = job.backup.status.clone().unwrap_or_default();
    let snapshot = status
        .repository_snapshot
        .clone()
        .ok_or("the backup has no repository snapshot")?;
    let uid = job.restore.metadata.uid.clone().unwrap_or_default();
    let restore_name = job.restore.metadata.name.clone().unwrap_or_default();
    let backup_name = job.backup.metadata.name.clone().unwrap_or_default();
    let mut outcome = RestoreOutcome::default();
    for (project, target) in job.targets {
        let pod_security = status
            .projects
            .iter()
            .find(|summary| &summary.name == project)
            .map(|summary| summary.pod_security.clone())
            .unwrap_or_default();
        let ns = namespace::restored_namespace(
            target,
            &job.backup.spec.account,
            &backup_name,
            &restore_name,
            &uid,
            &pod_security,
        );
        if let Err(err) =
            namespace::ensure(client, &ns, &namespace::RestoreIdentity::of(job.restore)).await
        {
            outcome.failed.push(ItemOutcome {
                project: project.clone(),
                kind: "Namespace".into(),
                name: target.clone(),
                reason: err.to_string(),
            });
            continue;
        }
        let stream = store
            .read_stream(&snapshot, &manifest_stream(project))
            .await
            .map_err(|e| {
                format!(
                    "reading project {project} from the repository failed: {}",
                    e.message
                )
            })?;
        let mut lines = BufReader::new(stream).lines();
        let mut helpers = Vec::new();
        let mut group: Vec<Value> = Vec::new();
        loop {
            let line = match lines.next_line().await {
                Ok(Some(line)) => line,
                Ok(None) => break,
                Err(err) => {
                    outcome.failed.push(ItemOutcome {
                        project: project.clone(),
                        kind: "Project".into(),
                        name: project.clone(),
                        reason: format!(
                            "the backup's manifests could not be read to the end: {err}"
                        ),
                    });
                    break;
                }
            };
            let Ok(object) = serde_json::from_str::<Value>(&line) else {
                outcome.failed.push(ItemOutcome {
                    project: project.clone(),
                    kind: "Object".into(),
                    name: "?".into(),
                    reason: "an unreadable manifest line".into(),
                });
                continue;
            };
            let mut object = match rewrite_for_restore(object.clone(), project, target) {
                Rewritten::Skip(reason) => {
                    outcome.skipped.push(item(project, &object, reason));
                    continue;
                }
                Rewritten::Create(object, changes) => {
                    for change in changes {
                        outcome.adjusted.push(item(project, &object, change));
                    }
                    object
                }
            };
            if is_token(&object, job.backup) {
                let keys = regenerate_token(&mut object);
                outcome.restored.tokens += 1;
                outcome.regenerated_tokens.push(RegeneratedToken {
                    namespace: target.clone(),
                    secret: object["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    keys,
                });
            }
            if object["kind"] == "PersistentVolumeClaim" && object["apiVersion"] == "v1" {
                let pvc = object["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let record = status
                    .volume_snapshots
                    .iter()
                    .find(|v| v.project == *project && v.pvc == pvc);
                let excluded = status.excluded.iter().any(|e| {
                    e.project == *project && e.name == pvc && e.kind == "PersistentVolumeClaim"
                });
                match record {
                    Some(record) if job.restore.spec.restore_volumes => {
                        let helper = helper_name(&uid, target, &pvc);
                        if let Err(reason) = prepare_snapshot(client, &helper, target, record, job.timeouts.snapshot).await {
                            outcome.failed.push(item(project, &object, reason));
                            continue;
                        }
                        object = pvc_from_snapshot(object, &helper, record);
                        helpers.push((helper, pvc.clone()));
                        outcome.restored.volumes += 1;
                    }
                    _ if excluded => outcome.warnings.push(format!("PVC {target}/{pvc} was excluded from the backup (rewind.dev/exclude=true) and is created empty")),
                    Some(_) => outcome.warnings.push(format!("PVC {target}/{pvc} is created empty: spec.restoreVolumes is false")),
                    None => outcome.warnings.push(format!("PVC {target}/{pvc} has no snapshot in the backup and is created empty")),
                }
            }
            // Objects of one kind are independent: apply them together (dependency order is
            // kind by kind, as the backup wrote them).
            let same_kind = group.first().is_none_or(|first| {
                first["kind"] == object["kind"] && first["apiVersion"] == object["apiVersion"]
            });
            if !same_kind || group.len() >= GROUP_SIZE {
                apply_group(
                    client,
                    &discovery,
                    target,
                    project,
                    &mut group,
                    &mut outcome,
                )
                .await;
            }
            group.push(object);
        }
        apply_group(
            client,
            &discovery,
            target,
            project,
            &mut group,
            &mut outcome,
        )
        .await;
        wait_for_bound(
            client,
            target,
            &helpers,
            job.timeouts.snapshot,
            project,
            &mut outcome,
        )
        .await;
        for (helper, _) in &helpers {
            if let Err(err) = remove_helpers(client, helper, target).await {
                outcome.warnings.push(format!(
                    "the restore helper snapshot {target}/{helper} could not be removed: {err}"
                ));
            }
        }
        if job.restore.spec.restore_databases {
            for record in status
                .database_dumps
                .iter()
                .filter(|d| d.project == *project)
            {
                let dump = match store.read_stream(&snapshot, &record.stream).await {
                    Ok(dump) => dump,
                    Err(err) => {
                        outcome.failed.push(ItemOutcome {
                            project: project.clone(),
                            kind: "Database".into(),
                            name: record.pod.clone(),
                            reason: format!("reading the dump failed: {}", err.message),
                        });
                        continue;
                    }
                };
                match super::databases::load_dump(client, target, record, dump, job.timeouts.dump)
                    .await
                {
                    Ok(_) => outcome.restored.databases += 1,
                    Err(reason) => outcome.failed.push(ItemOutcome {
                        project: project.clone(),
                        kind: "Database".into(),
                        name: record.pod.clone(),
                        reason,
                    }),
                }
            }
        }
    }
    Ok(outcome)
}

/// Objects of one kind applied at once.
const GROUP_SIZE: usize = 128;
/// Concurrent API calls while applying a group.
const APPLY_CONCURRENCY: usize = 16;

async fn apply_group(
    client: &Client,
    discovery: &Discovery,
    target: &str,
    project: &str,
    group: &mut Vec<Value>,
    outcome: &mut RestoreOutcome,
) {
    use futures::StreamExt;
    let results: Vec<(Value, Result<(), String>)> = futures::stream::iter(group.drain(..))
        .map(|object| async move {
            let result = apply_object(client, discovery, target, &object).await;
            (object, result)
        })
        .buffer_unordered(APPLY_CONCURRENCY)
        .collect()
        .await;
    for (object, result) in results {
        match result {
            Ok(()) => outcome.restored.resources += 1,
            Err(reason) => outcome.failed.push(item(project, &object, reason)),
        }
    }
}

async fn wait_for_bound(
    client: &Client,
    namespace: &str,
    helpers: &[(String, String)],
    timeout: Duration,
    project: &str,
    outcome: &mut RestoreOutcome,
) {
    use k8s_openapi::api::core::v1::PersistentVolumeClaim;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let deadline = tokio::time::Instant::now() + timeout;
    for (_, pvc) in helpers {
        loop {
            let phase = claims
                .get_opt(pvc)
                .await
                .ok()
                .flatten()
                .and_then(|c| c.status)
                .and_then(|s| s.phase);
            if phase.as_deref() == Some("Bound") {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                outcome.failed.push(ItemOutcome {
                    project: project.to_string(),
                    kind: "PersistentVolumeClaim".into(),
                    name: pvc.clone(),
                    reason: format!("not Bound within {timeout:?} (phase {phase:?}): check the CSI provisioner's events on the PVC"),
                });
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::AccountBackupSpec;
    use serde_json::json;

    fn backup() -> AccountBackup {
        AccountBackup::new(
            "nightly",
            AccountBackupSpec {
                account: "acme".into(),
                display_name: None,
                notes: None,
                ttl: "168h".into(),
                volume_snapshot_class_name: None,
                databases: Default::default(),
                token_selector: None,
            },
        )
    }

    #[test]
    fn labelled_secrets_are_tokens_and_others_are_not() {
        let token = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "k", "labels": {"rewind.dev/token": "true"}}});
        let plain = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tls"}});
        assert!(is_token(&token, &backup()));
        assert!(!is_token(&plain, &backup()));
    }

    #[test]
    fn regenerated_token_keeps_keys_and_lengths_but_not_values() {
        let engine = base64::engine::general_purpose::STANDARD;
        let mut secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "k"},
            "data": {"key": engine.encode("sk_live_0123456789abcdef"), "webhook": engine.encode("whsec_ABCDEF123456")}});
        let keys = regenerate_token(&mut secret);
        assert_eq!(keys, vec!["key".to_string(), "webhook".to_string()]);
        let fresh = engine
            .decode(secret["data"]["key"].as_str().expect("string"))
            .expect("base64");
        assert_eq!(fresh.len(), "sk_live_0123456789abcdef".len());
        assert_ne!(fresh, b"sk_live_0123456789abcdef");
    }
}
