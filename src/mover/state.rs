//! What a mover pod's status says (pure): still working, done with its summary, or failed with
//! the reason — read from the pod the operator observed, never from the operator's memory.

use std::time::Duration;

use serde_json::Value;

use crate::api::VolumeCopyRecord;

/// How long a mover may wait for its image or a node before its volume fails.
pub const PENDING_GRACE: Duration = Duration::from_secs(300);

/// Waiting reasons that never pass by themselves: the volume fails at once with the message.
const HOPELESS_WAITING: [&str; 4] = [
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// Where one mover pod stands.
#[derive(Clone, Debug, PartialEq)]
pub enum MoverState {
    /// Scheduled, pulling or running: look again later.
    Working,
    /// Exited 0; its termination message (the `rewind volume` JSON summary).
    Succeeded(String),
    /// Failed, or cannot start: why, for the failed item.
    Failed(String),
}

/// The state of a mover pod (pure). `pending_for` is how long it has been Pending by the
/// caller's clock (its creation time against an injected now).
pub fn mover_state(pod: &Value, pending_for: Duration) -> MoverState {
    let status = &pod["status"];
    let phase = status["phase"].as_str().unwrap_or("Pending");
    let container = status["containerStatuses"]
        .as_array()
        .and_then(|all| all.first())
        .cloned()
        .unwrap_or(Value::Null);
    let terminated = &container["state"]["terminated"];
    let message = terminated["message"].as_str().unwrap_or("").trim();
    // Deleted by someone else (a drain, an admin) before it finished: its end says nothing
    // about the move. Wait until it is gone; the caller then starts it again.
    if pod["metadata"]["deletionTimestamp"].is_string() && phase != "Succeeded" {
        return MoverState::Working;
    }
    match phase {
        "Succeeded" => MoverState::Succeeded(message.to_string()),
        "Failed" => {
            let why = if !message.is_empty() {
                last_lines(message, 3)
            } else if let Some(reason) = status["reason"].as_str() {
                // DeadlineExceeded, Evicted, ...: the pod's own reason and message.
                format!(
                    "{reason}: {}",
                    status["message"].as_str().unwrap_or("no message")
                )
            } else {
                format!(
                    "exit code {}",
                    terminated["exitCode"]
                        .as_i64()
                        .map_or("unknown".into(), |c| c.to_string())
                )
            };
            MoverState::Failed(format!("the mover pod failed: {why}"))
        }
        _ => {
            let waiting = &container["state"]["waiting"];
            let reason = waiting["reason"].as_str().unwrap_or("");
            if HOPELESS_WAITING.contains(&reason) {
                return MoverState::Failed(format!(
                    "the mover pod cannot start: {reason}: {}",
                    waiting["message"].as_str().unwrap_or("no message")
                ));
            }
            if phase == "Pending" && pending_for >= PENDING_GRACE {
                let why = if reason.is_empty() {
                    unschedulable(status).unwrap_or_else(|| "not scheduled".into())
                } else {
                    format!("{reason}: {}", waiting["message"].as_str().unwrap_or(""))
                };
                return MoverState::Failed(format!(
                    "the mover pod did not start within {}s ({why}): check the mover image and the nodes movers may run on (--mover-node-selector)",
                    PENDING_GRACE.as_secs()
                ));
            }
            MoverState::Working
        }
    }
}

fn unschedulable(status: &Value) -> Option<String> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "PodScheduled" && c["status"] == "False")
        .map(|c| c["message"].as_str().unwrap_or("unschedulable").to_string())
}

/// The last `n` lines of a message (pure): a failed mover's stderr tail, already bounded by the
/// kubelet (4 KiB).
fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// The copy record from a backup mover's summary (pure).
pub fn copy_record(summary: &str, finished_at: &str) -> Result<VolumeCopyRecord, String> {
    let json: Value = serde_json::from_str(summary.lines().last().unwrap_or(""))
        .map_err(|err| format!("the mover's summary is not JSON ({err}): {summary:.200}"))?;
    let text = |field: &str| {
        json[field]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .ok_or_else(|| format!("the mover's summary has no {field}: {summary:.200}"))
    };
    let number = |field: &str| json[field].as_u64().unwrap_or(0);
    Ok(VolumeCopyRecord {
        snapshot: text("snapshot")?,
        stream: text("stream")?,
        files: number("files"),
        bytes: number("file_bytes"),
        stored_bytes: number("stored_bytes"),
        finished_at: finished_at.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(phase: &str, container_state: Value) -> Value {
        json!({"status": {"phase": phase, "containerStatuses": [{"state": container_state}]}})
    }

    #[test]
    fn a_succeeded_mover_gives_its_summary_and_the_copy_is_recorded_from_it() {
        let summary = r#"{"snapshot":"ab12","stream":"volume.tree","files":3,"file_bytes":300,"stored_bytes":120,"directories":2}"#;
        let state = mover_state(
            &pod(
                "Succeeded",
                json!({"terminated": {"exitCode": 0, "message": summary}}),
            ),
            Duration::ZERO,
        );
        let MoverState::Succeeded(message) = state else {
            panic!("{state:?}")
        };
        let record = copy_record(&message, "2026-11-30T21:00:00Z").expect("a record");
        assert_eq!(record.snapshot, "ab12");
        assert_eq!(
            (record.files, record.bytes, record.stored_bytes),
            (3, 300, 120)
        );
        assert!(copy_record("not json", "t").is_err());
        assert!(
            copy_record(r#"{"stream":"x"}"#, "t")
                .unwrap_err()
                .contains("snapshot")
        );
    }

    #[test]
    fn a_failed_mover_names_the_end_of_its_error_output() {
        let state = mover_state(
            &pod(
                "Failed",
                json!({"terminated": {"exitCode": 1, "message": "line 1\nline 2\nError: db/secret.txt: Permission denied\n"}}),
            ),
            Duration::ZERO,
        );
        assert_eq!(
            state,
            MoverState::Failed(
                "the mover pod failed: line 1 | line 2 | Error: db/secret.txt: Permission denied"
                    .into()
            )
        );
        let deadline = json!({"status": {"phase": "Failed", "reason": "DeadlineExceeded", "message": "Pod was active on the node longer than the specified deadline"}});
        assert!(
            matches!(mover_state(&deadline, Duration::ZERO), MoverState::Failed(m) if m.contains("DeadlineExceeded"))
        );
    }

    #[test]
    fn a_mover_deleted_while_it_works_is_waited_out_not_failed_but_a_finished_one_counts() {
        let mut killed = pod(
            "Failed",
            json!({"terminated": {"exitCode": 143, "reason": "Error"}}),
        );
        killed["metadata"]["deletionTimestamp"] = json!("2026-12-01T02:00:00Z");
        assert_eq!(mover_state(&killed, Duration::ZERO), MoverState::Working);
        let mut done = pod(
            "Succeeded",
            json!({"terminated": {"exitCode": 0, "message": "{}"}}),
        );
        done["metadata"]["deletionTimestamp"] = json!("2026-12-01T02:00:00Z");
        assert_eq!(
            mover_state(&done, Duration::ZERO),
            MoverState::Succeeded("{}".into())
        );
    }

    #[test]
    fn a_mover_that_cannot_start_fails_at_once_or_after_the_grace() {
        let missing_secret = pod(
            "Pending",
            json!({"waiting": {"reason": "CreateContainerConfigError", "message": "secret \"rewind-repository-key\" not found"}}),
        );
        assert!(
            matches!(mover_state(&missing_secret, Duration::ZERO), MoverState::Failed(m) if m.contains("rewind-repository-key"))
        );
        let pulling = pod(
            "Pending",
            json!({"waiting": {"reason": "ImagePullBackOff", "message": "back-off"}}),
        );
        assert_eq!(
            mover_state(&pulling, Duration::from_secs(10)),
            MoverState::Working
        );
        assert!(
            matches!(mover_state(&pulling, PENDING_GRACE), MoverState::Failed(m) if m.contains("ImagePullBackOff"))
        );
        let unscheduled = json!({"status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "message": "0/2 nodes are available"}]}});
        assert!(
            matches!(mover_state(&unscheduled, PENDING_GRACE), MoverState::Failed(m) if m.contains("0/2 nodes"))
        );
        assert_eq!(mover_state(&json!({}), Duration::ZERO), MoverState::Working);
        assert_eq!(
            mover_state(&pod("Running", json!({"running": {}})), PENDING_GRACE),
            MoverState::Working
        );
    }
}
