//! The work of a running restore (client required), per project: namespace, manifests (tokens regenerated,
//! PVCs from snapshots), helper cleanup, then databases. Every step is idempotent
//! (server-side apply, deterministic names), so a resumed restore simply runs it again.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::create::Creator;
use super::decide::status::RestoreOutcome;
use super::decide::volume_source::{VolumePlan, volume_plan};
use super::error::RestoreError;
use super::namespace;
use super::progress::ProgressWriter;
use super::rewrite::{Rewritten, rewrite_for_restore};
use super::tokens::regenerate_bytes;
use super::volumes::{helper_name, prepare_snapshot, pvc_from_snapshot, remove_helpers};
use crate::api::{
    AccountBackup, AccountBackupStatus, ItemOutcome, ProjectRestore, RegeneratedToken,
};
use crate::archive::layout::manifest_stream;
use crate::archive::store::SnapshotStore;
use crate::context::StepTimeouts;
use crate::manifest::is_token;
use crate::mover::restore::claim_filled_volume;

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
    /// Mover pods that fill volumes from the repository and database workers that load dumps
    /// from it, or why there are none (then dumps stream through the operator).
    pub movers: &'a crate::mover::Movers,
    /// When the restore's operation timeout ends.
    pub deadline: tokio::time::Instant,
}

/// The volumes a project's manifests brought back, to wait for and finish.
#[derive(Default)]
struct RestoredVolumes {
    /// Helper snapshots (name, PVC) of volumes restored from their CSI snapshot.
    helpers: Vec<(String, String)>,
    /// Volumes filled from the repository copy (PersistentVolume, PVC).
    filled: Vec<(String, String)>,
}

/// Restores every target project; items that fail are listed, the rest goes on.
pub async fn run(
    client: &Client,
    store: &dyn SnapshotStore,
    job: &RestoreJob<'_>,
    progress: &mut ProgressWriter,
) -> Result<RestoreOutcome, RestoreError> {
    let status = job.backup.status.clone().unwrap_or_default();
    let snapshot = status
        .repository_snapshot
        .clone()
        .ok_or_else(|| RestoreError::NoSnapshot(job.backup.name_any()))?;
    let mut outcome = RestoreOutcome::default();
    for (project, target) in job.targets {
        let step = ProjectStep {
            client,
            store,
            job,
            backup: &status,
            snapshot: &snapshot,
            project,
            target,
        };
        step.run(&mut outcome, progress).await?;
    }
    outcome.bytes_read = progress.bytes();
    Ok(outcome)
}

/// One project of a restore, into its target namespace.
struct ProjectStep<'a> {
    client: &'a Client,
    store: &'a dyn SnapshotStore,
    job: &'a RestoreJob<'a>,
    /// The backup's status: its snapshot, volume records and dumps.
    backup: &'a AccountBackupStatus,
    /// The backup's repository snapshot.
    snapshot: &'a str,
    project: &'a str,
    target: &'a str,
}

impl ProjectStep<'_> {
    /// Namespace, manifests, volumes bound, helpers removed, then databases.
    async fn run(
        &self,
        outcome: &mut RestoreOutcome,
        progress: &mut ProgressWriter,
    ) -> Result<(), RestoreError> {
        if let Err(reason) = self.ensure_namespace().await {
            outcome
                .failed
                .push(self.failure("Namespace", self.target, reason));
            return Ok(());
        }
        let volumes = self.restore_manifests(outcome, progress).await?;
        let claims: Vec<&str> = volumes
            .helpers
            .iter()
            .chain(volumes.filled.iter())
            .map(|(_, pvc)| pvc.as_str())
            .collect();
        wait_for_bound(
            self.client,
            self.target,
            &claims,
            self.job.timeouts.snapshot,
            self.project,
            outcome,
        )
        .await;
        for (volume, pvc) in &volumes.filled {
            if let Err(err) = super::movers::give_back_reclaim_policy(self.client, volume).await {
                outcome.warnings.push(format!(
                    "the volume {volume} of {}/{pvc} keeps reclaim policy Retain: {err}",
                    self.target
                ));
            }
        }
        for (helper, _) in &volumes.helpers {
            if let Err(err) = remove_helpers(self.client, helper, self.target).await {
                outcome.warnings.push(format!(
                    "the restore helper snapshot {}/{helper} could not be removed: {err}",
                    self.target
                ));
            }
        }
        if self.job.restore.spec.restore_databases {
            self.restore_databases(outcome, progress).await;
        }
        Ok(())
    }

    fn failure(&self, kind: &str, name: &str, reason: String) -> ItemOutcome {
        ItemOutcome {
            project: self.project.to_string(),
            kind: kind.into(),
            name: name.to_string(),
            reason,
        }
    }

    /// The target namespace, created as the restore's own (or found so after a resume).
    async fn ensure_namespace(&self) -> Result<(), String> {
        let pod_security = self
            .backup
            .projects
            .iter()
            .find(|summary| summary.name == self.project)
            .map(|summary| summary.pod_security.clone())
            .unwrap_or_default();
        let ns = namespace::restored_namespace(
            self.target,
            &self.job.backup.spec.account,
            &self.job.backup.name_any(),
            &self.job.restore.name_any(),
            self.job.restore.metadata.uid.as_deref().unwrap_or_default(),
            &pod_security,
        );
        namespace::ensure(
            self.client,
            &ns,
            &namespace::RestoreIdentity::of(self.job.restore),
        )
        .await
        .map_err(|err| err.to_string())
    }

    /// Streams the project's manifests from the repository and creates them kind by kind, in the
    /// order the backup wrote them; returns the helper snapshots of restored PVCs.
    async fn restore_manifests(
        &self,
        outcome: &mut RestoreOutcome,
        progress: &mut ProgressWriter,
    ) -> Result<RestoredVolumes, RestoreError> {
        let stream = self
            .store
            .read_stream(self.snapshot, &manifest_stream(self.project))
            .await
            .map_err(|e| RestoreError::Repository {
                message: format!("reading project {}: {}", self.project, e.message),
                permanent: e.permanent,
            })?;
        let mut lines = BufReader::new(stream).lines();
        let mut volumes = RestoredVolumes::default();
        let mut creator = Creator::new(self.client.clone(), self.target);
        let mut bytes_read = 0;
        loop {
            let line = match lines.next_line().await {
                Ok(Some(line)) => {
                    bytes_read += line.len() as u64 + 1;
                    line
                }
                Ok(None) => break,
                Err(err) => {
                    outcome.failed.push(self.failure(
                        "Project",
                        self.project,
                        format!("the backup's manifests could not be read to the end: {err}"),
                    ));
                    break;
                }
            };
            let Ok(object) = serde_json::from_str::<Value>(&line) else {
                outcome.failed.push(self.failure(
                    "Object",
                    "?",
                    "an unreadable manifest line".into(),
                ));
                continue;
            };
            let Some(object) = self.prepare(object, &mut volumes, outcome).await else {
                continue;
            };
            // Objects of one kind are independent and created together; the backup wrote the
            // kinds in dependency order, and the creator waits where the kind changes.
            let finished = creator.push(object).await;
            self.count(finished, outcome, progress, std::mem::take(&mut bytes_read))
                .await;
        }
        let finished = creator.finish().await;
        self.count(finished, outcome, progress, bytes_read).await;
        Ok(volumes)
    }

    /// Counts finished creates into the outcome and the progress.
    async fn count(
        &self,
        finished: Vec<(Value, Result<(), String>)>,
        outcome: &mut RestoreOutcome,
        progress: &mut ProgressWriter,
        bytes: u64,
    ) {
        let items = finished.len() as u64;
        for (object, result) in finished {
            match result {
                Ok(()) => outcome.restored.resources += 1,
                Err(reason) => outcome.failed.push(item(self.project, &object, reason)),
            }
        }
        progress.add(items, bytes).await;
    }

    /// One backed-up object made ready to create: rewritten to be inert in its new namespace,
    /// a token given new values, a PVC pointed at its snapshot. None: it is not created.
    async fn prepare(
        &self,
        object: Value,
        volumes: &mut RestoredVolumes,
        outcome: &mut RestoreOutcome,
    ) -> Option<Value> {
        let (project, target) = (self.project, self.target);
        let mut object = match rewrite_for_restore(object.clone(), project, target) {
            Rewritten::Skip(reason) => {
                outcome.skipped.push(item(project, &object, reason));
                return None;
            }
            Rewritten::Create(object, changes) => {
                for change in changes {
                    outcome.adjusted.push(item(project, &object, change));
                }
                object
            }
        };
        if is_token(&object, self.job.backup.spec.token_selector.as_ref()) {
            let keys = regenerate_token(&mut object);
            outcome.restored.tokens += 1;
            outcome.regenerated_tokens.push(RegeneratedToken {
                namespace: target.to_string(),
                secret: object["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                keys,
            });
        }
        if object["kind"] == "PersistentVolumeClaim" && object["apiVersion"] == "v1" {
            return self.prepare_claim(object, volumes, outcome).await;
        }
        Some(object)
    }

    /// A PVC comes back from its volume snapshot or its repository copy (`spec.volumeSource`)
    /// when the backup has one and the restore wants volumes; otherwise it is created empty,
    /// with a warning that says why.
    async fn prepare_claim(
        &self,
        object: Value,
        volumes: &mut RestoredVolumes,
        outcome: &mut RestoreOutcome,
    ) -> Option<Value> {
        let (project, target) = (self.project, self.target);
        let pvc = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let record = self
            .backup
            .volume_snapshots
            .iter()
            .find(|v| v.project == project && v.pvc == pvc);
        let excluded =
            self.backup.excluded.iter().any(|e| {
                e.project == project && e.name == pvc && e.kind == "PersistentVolumeClaim"
            });
        match record {
            Some(record) if self.job.restore.spec.restore_volumes => {
                let movers_off = match self.job.movers {
                    crate::mover::Movers::Off(why) => Some(why.as_str()),
                    crate::mover::Movers::On { .. } => None,
                };
                let source = self.job.restore.spec.volume_source;
                let copy = match volume_plan(source, record, movers_off) {
                    VolumePlan::Fail(reason) => {
                        outcome.failed.push(item(project, &object, reason));
                        return None;
                    }
                    VolumePlan::Repository(copy) => copy,
                    VolumePlan::Snapshot => {
                        return match self.claim_from_snapshot(&object, record, volumes).await {
                            Ok(claim) => {
                                outcome.restored.volumes += 1;
                                Some(claim)
                            }
                            Err(reason) => {
                                outcome.failed.push(item(project, &object, reason));
                                None
                            }
                        };
                    }
                    VolumePlan::SnapshotThenRepository(copy) => {
                        match self.claim_from_snapshot(&object, record, volumes).await {
                            Ok(claim) => {
                                outcome.restored.volumes += 1;
                                return Some(claim);
                            }
                            Err(reason) => {
                                outcome.warnings.push(format!(
                                    "PVC {target}/{pvc}: its snapshot could not be used ({reason}); filled from the backup's repository copy instead"
                                ));
                                copy
                            }
                        }
                    }
                };
                return match self.fill_from_repository(record, copy).await {
                    Ok(volume) => {
                        outcome.restored.volumes += 1;
                        volumes.filled.push((volume.clone(), pvc));
                        Some(claim_filled_volume(object, &volume))
                    }
                    Err(reason) => {
                        outcome.failed.push(item(
                            project,
                            &object,
                            format!("filling the volume from the backup's repository copy failed: {reason}"),
                        ));
                        None
                    }
                };
            }
            _ if excluded => outcome.warnings.push(format!("PVC {target}/{pvc} was excluded from the backup (rewind.dev/exclude=true) and is created empty")),
            Some(_) => outcome.warnings.push(format!("PVC {target}/{pvc} is created empty: spec.restoreVolumes is false")),
            None => outcome.warnings.push(format!("PVC {target}/{pvc} has no snapshot in the backup and is created empty")),
        }
        Some(object)
    }

    /// The claim pointed at a helper snapshot of the backup's CSI snapshot, once it is ready.
    async fn claim_from_snapshot(
        &self,
        object: &Value,
        record: &crate::api::VolumeSnapshotRecord,
        volumes: &mut RestoredVolumes,
    ) -> Result<Value, String> {
        let target = self.target;
        let pvc = record.pvc.clone();
        let uid = self.job.restore.metadata.uid.as_deref().unwrap_or_default();
        let helper = helper_name(uid, target, &pvc);
        if let Err(reason) = prepare_snapshot(
            self.client,
            &helper,
            target,
            record,
            self.job.timeouts.snapshot,
        )
        .await
        {
            // The helper objects made for it go now: the content is cluster-scoped and would
            // outlive the target namespace.
            if let Err(err) = remove_helpers(self.client, &helper, target).await {
                tracing::warn!(%helper, error = %err, "removing a restore helper failed");
            }
            return Err(reason);
        }
        volumes.helpers.push((helper.clone(), pvc));
        Ok(pvc_from_snapshot(object.clone(), &helper, record))
    }

    /// A new volume filled from the repository copy by a mover, handed to the claim.
    async fn fill_from_repository(
        &self,
        record: &crate::api::VolumeSnapshotRecord,
        copy: &crate::api::VolumeCopyRecord,
    ) -> Result<String, String> {
        let crate::mover::Movers::On { settings, .. } = self.job.movers else {
            return Err("this operator runs no movers".into());
        };
        let owner = self
            .job
            .restore
            .controller_owner_ref(&())
            .ok_or_else(|| "the restore has no UID yet".to_string())?;
        let time_left = self
            .job
            .deadline
            .saturating_duration_since(tokio::time::Instant::now());
        super::movers::fill_from_repository(
            self.client,
            settings,
            &super::movers::Fill {
                restore_uid: self.job.restore.metadata.uid.as_deref().unwrap_or_default(),
                owner: &owner,
                target_namespace: self.target,
                record,
                copy,
            },
            time_left,
        )
        .await
    }

    /// Each of the project's dumps streamed into its restored database pod.
    async fn restore_databases(&self, outcome: &mut RestoreOutcome, progress: &mut ProgressWriter) {
        let dumps = self
            .backup
            .database_dumps
            .iter()
            .filter(|d| d.project == self.project);
        for record in dumps {
            if let crate::mover::Movers::On { settings, .. } = self.job.movers {
                // A worker on a node moves the dump; the operator moves no byte of it.
                let time_left = self
                    .job
                    .deadline
                    .saturating_duration_since(tokio::time::Instant::now());
                let load = super::workers::Load {
                    restore: self.job.restore,
                    target_namespace: self.target,
                    record,
                    backup_snapshot: self.snapshot,
                };
                match super::workers::load_dump(
                    self.client,
                    settings,
                    &load,
                    self.job.timeouts.dump,
                    time_left,
                )
                .await
                {
                    Ok(_) => outcome.restored.databases += 1,
                    Err(reason) => {
                        outcome
                            .failed
                            .push(self.failure("Database", &record.pod, reason))
                    }
                }
                progress.add(1, record.bytes).await;
                continue;
            }
            // A dump a worker wrote lives in a snapshot of its own.
            let snapshot = super::decide::dump_snapshot(record, self.snapshot);
            let mut attempt = 0;
            let failure = loop {
                attempt += 1;
                let (reason, repository_failed, permanent) =
                    match self.store.read_stream(snapshot, &record.stream).await {
                        Err(err) => (
                            format!("reading the dump failed: {}", err.message),
                            true,
                            err.permanent,
                        ),
                        Ok(dump) => match super::databases::load_dump(
                            self.client,
                            self.target,
                            record,
                            dump,
                            self.job.timeouts.dump,
                        )
                        .await
                        {
                            Ok(_) => break None,
                            Err(failed) => (failed.reason, failed.repository_failed, false),
                        },
                    };
                match super::decide::dump_load_retry(attempt, repository_failed, permanent) {
                    Some(wait) => {
                        tracing::warn!(pod = %record.pod, attempt, %reason, "streaming the dump again");
                        tokio::time::sleep(wait).await;
                    }
                    None => break Some(reason),
                }
            };
            match failure {
                None => outcome.restored.databases += 1,
                Some(reason) => outcome
                    .failed
                    .push(self.failure("Database", &record.pod, reason)),
            }
            progress.add(1, record.bytes).await;
        }
    }
}

async fn wait_for_bound(
    client: &Client,
    namespace: &str,
    pvcs: &[&str],
    timeout: Duration,
    project: &str,
    outcome: &mut RestoreOutcome,
) {
    use k8s_openapi::api::core::v1::PersistentVolumeClaim;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let deadline = tokio::time::Instant::now() + timeout;
    for pvc in pvcs {
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
                    name: pvc.to_string(),
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
    use serde_json::json;

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
