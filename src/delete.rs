//! Deletes that cannot hit a successor: an object is deleted by name only together with the
//! uid the caller decided on, so a same-named object made since is left alone (409).

use kube::api::{DeleteParams, Preconditions};

/// Delete options that delete only the object with `uid` (no check-then-delete window).
pub fn exactly(uid: Option<String>) -> DeleteParams {
    DeleteParams {
        preconditions: uid.map(|uid| Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::default()
    }
}
