//! Kubernetes Events on Rewind's objects: a failed publish is logged, never fails a reconcile.

use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder};
use tracing::warn;

/// Publishes an event about `object`; `action` names the operation (`Backup`, `Restore`, …).
pub async fn publish<K>(
    recorder: &Recorder,
    object: &K,
    action: &str,
    type_: EventType,
    reason: &str,
    note: String,
) where
    K: Resource<DynamicType = ()>,
{
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    if let Err(err) = recorder.publish(&event, &object.object_ref(&())).await {
        warn!(error = %err, "publishing an event failed");
    }
}
