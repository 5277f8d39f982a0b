//! Consistency hooks: `rewind.dev/pre-backup` / `rewind.dev/post-backup` commands run over exec.
//!
//! Each hook has a timeout (`rewind.dev/hook-timeout`, default from the
//! operator flag) and an on-error policy (`rewind.dev/hook-on-error`: `fail`,
//! the default, skips the project's snapshots and dumps because consistency is
//! not assured; `continue` logs a warning and goes on). Post hooks always run.

use crate::api::{
    HOOK_ON_ERROR_ANNOTATION, HOOK_TIMEOUT_ANNOTATION, POST_BACKUP_ANNOTATION,
    PRE_BACKUP_ANNOTATION,
};
use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

use crate::api::ItemOutcome;
use crate::duration::parse_duration;

/// Before or after the snapshots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookStage {
    /// `rewind.dev/pre-backup`.
    Pre,
    /// `rewind.dev/post-backup`.
    Post,
}

impl HookStage {
    fn annotation(self) -> &'static str {
        match self {
            Self::Pre => PRE_BACKUP_ANNOTATION,
            Self::Post => POST_BACKUP_ANNOTATION,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Pre => "pre-backup hook",
            Self::Post => "post-backup hook",
        }
    }
}

/// One hook to run, read from a pod's annotations (pure).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hook {
    /// The pod.
    pub pod: String,
    /// The container (`rewind.dev/database-container`, else the first).
    pub container: Option<String>,
    /// The shell script.
    pub script: String,
    /// Its time limit.
    pub timeout: Duration,
    /// Go on when it fails.
    pub continue_on_error: bool,
}

/// The hook of `stage` declared on a pod, if any.
pub fn hook_of(
    pod: &str,
    annotations: &BTreeMap<String, String>,
    stage: HookStage,
    default_timeout: Duration,
) -> Option<Hook> {
    let script = annotations.get(stage.annotation())?.trim();
    if script.is_empty() {
        return None;
    }
    Some(Hook {
        pod: pod.to_string(),
        container: annotations.get(crate::api::CONTAINER_ANNOTATION).cloned(),
        script: script.to_string(),
        // A pod may ask for less time than the operator's limit, never more: the annotation is
        // written by whoever edits the pod, and a hook that never returns must not hold a
        // backup slot for longer than the operator allows.
        timeout: annotations
            .get(HOOK_TIMEOUT_ANNOTATION)
            .and_then(|t| parse_duration(t).ok())
            .map_or(default_timeout, |asked| asked.min(default_timeout)),
        continue_on_error: annotations
            .get(HOOK_ON_ERROR_ANNOTATION)
            .map(String::as_str)
            == Some("continue"),
    })
}

/// What running a project's hooks of one stage gave.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HookResults {
    /// Hooks that failed with policy `fail`.
    pub failed: Vec<ItemOutcome>,
    /// Hooks that failed with policy `continue`, as activity warnings.
    pub warnings: Vec<String>,
    /// Hooks that ran fine.
    pub succeeded: u64,
}

impl HookResults {
    /// A pre hook failed with policy `fail`: the project's snapshots must not be taken.
    pub fn blocks_snapshots(&self) -> bool {
        !self.failed.is_empty()
    }
}

/// Runs every hook of `stage` in a project's running pods, one after another.
pub async fn run_hooks(
    client: &Client,
    project: &str,
    stage: HookStage,
    default_timeout: Duration,
) -> Result<HookResults, kube::Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), project);
    let mut results = HookResults::default();
    for pod in pods.list(&ListParams::default()).await?.items {
        let Some(hook) = hook_of(&pod.name_any(), pod.annotations(), stage, default_timeout) else {
            continue;
        };
        let command = vec!["sh".to_string(), "-c".to_string(), hook.script.clone()];
        match crate::exec::run(
            &pods,
            &hook.pod,
            hook.container.as_deref(),
            &command,
            None,
            hook.timeout,
            None,
        )
        .await
        {
            Ok(_) => results.succeeded += 1,
            Err(err) if hook.continue_on_error => {
                results.warnings.push(format!(
                    "{} of pod {project}/{} failed (continuing): {err}",
                    stage.label(),
                    hook.pod
                ));
            }
            Err(err) => results.failed.push(ItemOutcome {
                project: project.to_string(),
                kind: "Hook".into(),
                name: format!("{}/{}", hook.pod, stage.annotation()),
                reason: format!(
                    "{} failed: {err}; fix the command or set rewind.dev/hook-on-error=continue",
                    stage.label()
                ),
            }),
        }
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_cannot_give_its_hook_more_time_than_the_operator_allows() {
        let annotations = BTreeMap::from([
            (
                HookStage::Pre.annotation().to_string(),
                "sleep 1000000".to_string(),
            ),
            (HOOK_TIMEOUT_ANNOTATION.to_string(), "9999h".to_string()),
        ]);
        let hook =
            hook_of("db", &annotations, HookStage::Pre, Duration::from_secs(300)).expect("a hook");
        assert_eq!(hook.timeout, Duration::from_secs(300));
        let shorter = BTreeMap::from([
            (HookStage::Pre.annotation().to_string(), "true".to_string()),
            (HOOK_TIMEOUT_ANNOTATION.to_string(), "5s".to_string()),
        ]);
        let hook =
            hook_of("db", &shorter, HookStage::Pre, Duration::from_secs(300)).expect("a hook");
        assert_eq!(hook.timeout, Duration::from_secs(5));
    }

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn hook_reads_script_timeout_and_policy() {
        let hook = hook_of(
            "db-0",
            &annotations(&[
                (PRE_BACKUP_ANNOTATION, "psql -c CHECKPOINT"),
                (HOOK_TIMEOUT_ANNOTATION, "5s"),
                (HOOK_ON_ERROR_ANNOTATION, "continue"),
            ]),
            HookStage::Pre,
            Duration::from_secs(60),
        )
        .expect("a hook");
        assert_eq!(hook.script, "psql -c CHECKPOINT");
        assert_eq!(hook.timeout, Duration::from_secs(5));
        assert!(hook.continue_on_error);
    }

    #[test]
    fn hooks_fail_by_default_and_use_the_operator_timeout() {
        let hook = hook_of(
            "web",
            &annotations(&[(POST_BACKUP_ANNOTATION, "unfreeze")]),
            HookStage::Post,
            Duration::from_secs(60),
        )
        .expect("a hook");
        assert!(!hook.continue_on_error);
        assert_eq!(hook.timeout, Duration::from_secs(60));
        assert!(
            hook_of(
                "web",
                &annotations(&[(POST_BACKUP_ANNOTATION, "x")]),
                HookStage::Pre,
                Duration::from_secs(1)
            )
            .is_none()
        );
    }
}
