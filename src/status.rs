//! Status writing shared by every controller: conditions, the activity log and server-side apply.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::{ActivityEntry, ActivityLevel, ItemOutcome, ProjectSummary};

/// The field manager of every status write of the controllers (the notifier has its own).
pub const FIELD_MANAGER: &str = "rewind-operator";

/// How many entries the activity log keeps (the oldest are dropped first).
pub const ACTIVITY_LIMIT: usize = 60;

/// Condition type every kind carries; kstatus reads it.
pub const READY: &str = "Ready";

/// Sets a condition, changing `lastTransitionTime` only when the status flips.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: Timestamp,
) {
    let status_text = if status { "True" } else { "False" }.to_string();
    let message = message.into();
    if let Some(existing) = conditions.iter_mut().find(|c| c.type_ == type_) {
        if existing.status != status_text {
            existing.last_transition_time = Time(now);
        }
        existing.status = status_text;
        existing.reason = reason.to_string();
        existing.message = message;
        existing.observed_generation = generation;
    } else {
        conditions.push(Condition {
            type_: type_.to_string(),
            status: status_text,
            reason: reason.to_string(),
            message,
            observed_generation: generation,
            last_transition_time: Time(now),
        });
    }
}

/// Appends to an activity log, keeping at most [`ACTIVITY_LIMIT`] entries.
pub fn push_activity(
    log: &mut Vec<ActivityEntry>,
    level: ActivityLevel,
    message: impl Into<String>,
    now: Timestamp,
) {
    let message = message.into();
    // The same news again (a reconcile that keeps failing the same way) moves the last entry's
    // time instead of pushing the rest of the log out.
    if let Some(last) = log.last_mut()
        && last.level == level
        && last.message == message
    {
        last.time = Time(now);
        return;
    }
    log.push(ActivityEntry {
        time: Time(now),
        level,
        message,
    });
    if log.len() > ACTIVITY_LIMIT {
        let excess = log.len() - ACTIVITY_LIMIT;
        log.drain(..excess);
    }
}

/// The most entries a status list of items (failed, skipped, excluded, adjusted) keeps: an
/// account of thousands of items must not push its object past the API server's size limit.
pub const ITEM_LIST_LIMIT: usize = 100;

/// The most resource-token names a backup's status lists over all its projects (each project's
/// `tokenCount` still counts them all; the outcome record in the repository keeps 100 a project).
pub const TOKEN_NAMES_LIMIT: usize = 1000;

/// `summary` as a status lists it after the projects `listed` (pure): its token names beyond the
/// status-wide [`TOKEN_NAMES_LIMIT`] left out, its `tokenCount` untouched.
pub fn summary_for_status(listed: &[ProjectSummary], summary: &ProjectSummary) -> ProjectSummary {
    let named: usize = listed.iter().map(|p| p.tokens.len()).sum();
    let mut kept = summary.clone();
    kept.tokens
        .truncate(TOKEN_NAMES_LIMIT.saturating_sub(named));
    kept
}

/// The first entries of `items` for a status list (pure): all of them when they fit, else the
/// first `ITEM_LIST_LIMIT - 1` and one entry saying how many more there are and where they are.
pub fn first_items(items: &[ItemOutcome], where_all: &str) -> Vec<ItemOutcome> {
    if items.len() <= ITEM_LIST_LIMIT {
        return items.to_vec();
    }
    let kept = ITEM_LIST_LIMIT - 1;
    let mut listed = items[..kept].to_vec();
    listed.push(ItemOutcome {
        project: String::new(),
        kind: MORE_KIND.into(),
        name: (items.len() - kept).to_string(),
        reason: format!(
            "{} more items not listed here (the status keeps the first {kept}); {where_all}",
            items.len() - kept
        ),
    });
    listed
}

/// The kind of the entry that ends a shortened item list; its name is how many were left out.
pub const MORE_KIND: &str = "More";

/// How many items a status list stands for, counting those a shortened list left out (pure).
pub fn item_count(listed: &[ItemOutcome]) -> usize {
    match listed.last() {
        Some(last) if last.kind == MORE_KIND => {
            listed.len() - 1 + last.name.parse::<usize>().unwrap_or(0)
        }
        _ => listed.len(),
    }
}

/// Writes `status` of a cluster-scoped object by server-side apply with [`FIELD_MANAGER`].
pub async fn apply_status<K, S>(api: &Api<K>, name: &str, status: &S) -> Result<K, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize,
{
    apply_status_as(api, name, status, FIELD_MANAGER).await
}

/// Writes the part of `status` one field manager owns (the notifier's own field, for one).
pub async fn apply_status_as<K, S>(
    api: &Api<K>,
    name: &str,
    status: &S,
    manager: &str,
) -> Result<K, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize,
{
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(manager).force(),
        &Patch::Apply(&patch),
    )
    .await
}

/// Whether an operation started at `started_at` has run longer than `limit` at `now` (pure).
/// One that never started has not.
pub fn past_deadline(
    started_at: Option<&Time>,
    now: Timestamp,
    limit: std::time::Duration,
) -> bool {
    let Some(Time(started)) = started_at else {
        return false;
    };
    let limit = jiff::SignedDuration::try_from(limit).unwrap_or(jiff::SignedDuration::MAX);
    now.duration_since(*started) > limit
}

/// How long an operation started at `started_at` may still run before `limit` (pure).
pub fn time_left(
    started_at: Option<&Time>,
    now: Timestamp,
    limit: std::time::Duration,
) -> std::time::Duration {
    let Some(Time(started)) = started_at else {
        return limit;
    };
    limit.saturating_sub(now.duration_since(*started).unsigned_abs())
}

/// When an operation started at `started` should finish, at the rate it had until `now` (pure).
/// None until enough is done to say: 5% of the items and a second of work.
pub fn estimate_completion(
    started: Timestamp,
    now: Timestamp,
    done: u64,
    total: u64,
) -> Option<Timestamp> {
    let elapsed = now.duration_since(started).as_secs_f64();
    if total == 0 || done == 0 || done >= total || done < total / 20 || elapsed < 1.0 {
        return None;
    }
    let remaining = elapsed * (total - done) as f64 / done as f64;
    now.checked_add(jiff::SignedDuration::try_from_secs_f64(remaining).ok()?)
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_list_keeps_the_first_items_and_says_how_many_more() {
        let item = |n: usize| ItemOutcome {
            project: "p".into(),
            kind: "PersistentVolumeClaim".into(),
            name: format!("pvc-{n}"),
            reason: "excluded".into(),
        };
        let few: Vec<ItemOutcome> = (0..ITEM_LIST_LIMIT).map(item).collect();
        assert_eq!(first_items(&few, "see the log"), few);
        let many: Vec<ItemOutcome> = (0..5000).map(item).collect();
        let listed = first_items(&many, "see the log");
        assert_eq!(listed.len(), ITEM_LIST_LIMIT);
        assert_eq!(listed[0].name, "pvc-0");
        let last = listed.last().expect("the summary");
        assert_eq!(last.kind, "More");
        assert!(
            last.reason.starts_with("4901 more items"),
            "{}",
            last.reason
        );
        assert_eq!(item_count(&listed), 5000);
        assert_eq!(item_count(&few), ITEM_LIST_LIMIT);
    }

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).expect("valid time")
    }

    #[test]
    fn condition_transition_time_changes_only_when_status_flips() {
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            READY,
            false,
            "Running",
            "copying",
            Some(1),
            at(10),
        );
        set_condition(
            &mut conditions,
            READY,
            false,
            "Running",
            "still copying",
            Some(1),
            at(20),
        );
        assert_eq!(conditions[0].last_transition_time, Time(at(10)));
        assert_eq!(conditions[0].message, "still copying");
        set_condition(
            &mut conditions,
            READY,
            true,
            "Completed",
            "done",
            Some(1),
            at(30),
        );
        assert_eq!(conditions[0].last_transition_time, Time(at(30)));
        assert_eq!(conditions.len(), 1);
    }

    #[test]
    fn the_same_news_again_moves_the_last_entrys_time_instead_of_filling_the_log() {
        let mut log = Vec::new();
        push_activity(&mut log, ActivityLevel::Info, "copying", at(0));
        for i in 1..10 {
            push_activity(
                &mut log,
                ActivityLevel::Warning,
                "resumed: copying again",
                at(i),
            );
        }
        assert_eq!(log.len(), 2);
        assert_eq!(log[1].time, Time(at(9)));
        push_activity(
            &mut log,
            ActivityLevel::Error,
            "resumed: copying again",
            at(10),
        );
        push_activity(
            &mut log,
            ActivityLevel::Warning,
            "resumed: copying again",
            at(11),
        );
        assert_eq!(log.len(), 4, "a different level or message is news");
    }

    #[test]
    fn activity_log_keeps_only_the_newest_entries() {
        let mut log = Vec::new();
        for i in 0..(ACTIVITY_LIMIT + 5) {
            push_activity(
                &mut log,
                ActivityLevel::Info,
                format!("step {i}"),
                at(i as i64),
            );
        }
        assert_eq!(log.len(), ACTIVITY_LIMIT);
        assert_eq!(log[0].message, "step 5");
        assert_eq!(
            log.last().map(|e| e.message.as_str()),
            Some(format!("step {}", ACTIVITY_LIMIT + 4).as_str())
        );
    }

    #[test]
    fn completion_is_estimated_from_the_rate_so_far_once_enough_is_done() {
        let start = Timestamp::from_second(1_000).expect("time");
        let at = |s: i64| Timestamp::from_second(1_000 + s).expect("time");
        assert_eq!(
            estimate_completion(start, at(10), 0, 1000),
            None,
            "nothing done"
        );
        assert_eq!(
            estimate_completion(start, at(10), 40, 1000),
            None,
            "under 5%"
        );
        assert_eq!(estimate_completion(start, at(10), 250, 1000), Some(at(40)));
        assert_eq!(estimate_completion(start, at(10), 1000, 1000), None, "done");
        assert_eq!(
            estimate_completion(start, at(0), 500, 1000),
            None,
            "no time passed yet"
        );
    }

    #[test]
    fn a_status_names_at_most_1000_tokens_over_all_its_projects_and_counts_them_all() {
        let full = ProjectSummary {
            tokens: (0..100).map(|n| format!("key-{n}")).collect(),
            token_count: 400,
            ..ProjectSummary::default()
        };
        let mut listed: Vec<ProjectSummary> = Vec::new();
        for _ in 0..12 {
            let kept = summary_for_status(&listed, &full);
            listed.push(kept);
        }
        let named: usize = listed.iter().map(|p| p.tokens.len()).sum();
        assert_eq!(named, TOKEN_NAMES_LIMIT);
        assert_eq!(listed[9].tokens.len(), 100);
        assert!(listed[10].tokens.is_empty());
        assert!(listed.iter().all(|p| p.token_count == 400));
    }
}
