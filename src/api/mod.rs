//! The three custom resources of `rewind.dev/v1alpha1`: types only, no I/O.
//!
//! The CRD YAML in `crds/` is generated from these types (`rewind crd`), so
//! every doc comment here becomes the `kubectl explain` text a user reads.

// Each `printcolumn(...)` repeats `type_ = ...`; clippy reads that as a duplicated attribute.
#![allow(clippy::duplicated_attributes)]

mod account_backup;
mod backup_schedule;
mod common;
mod keys;
mod project_restore;

pub use account_backup::*;
pub use backup_schedule::*;
pub use common::*;
pub use keys::*;
pub use project_restore::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use kube::core::crd::merge_crds;

/// The API group every Rewind kind belongs to.
pub const GROUP: &str = "rewind.dev";

/// Every CRD Rewind serves, in a stable order (the file names in `crds/`).
pub fn all_crds() -> Vec<(&'static str, CustomResourceDefinition)> {
    let _ = merge_crds; // single version today; merge_crds is where v1beta1 joins.
    vec![
        (
            "accountbackups.rewind.dev.yaml",
            kubernetes_formats(AccountBackup::crd()),
        ),
        (
            "backupschedules.rewind.dev.yaml",
            kubernetes_formats(BackupSchedule::crd()),
        ),
        (
            "projectrestores.rewind.dev.yaml",
            kubernetes_formats(ProjectRestore::crd()),
        ),
    ]
}

/// schemars writes `format: uint64/uint32` for unsigned integers, which the API server does not
/// know (it warns on every apply); Kubernetes' own are int64/int32 with `minimum: 0`.
fn kubernetes_formats(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    fn walk(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                let unsigned = match map.get("format").and_then(|f| f.as_str()) {
                    Some("uint64") => Some("int64"),
                    Some("uint32") | Some("uint16") | Some("uint8") => Some("int32"),
                    _ => None,
                };
                if let Some(format) = unsigned {
                    map.insert("format".into(), format.into());
                    map.insert("minimum".into(), 0.into());
                }
                map.values_mut().for_each(walk);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let Ok(mut json) = serde_json::to_value(&crd) else {
        return crd;
    };
    walk(&mut json);
    serde_json::from_value(json).unwrap_or(crd)
}

#[cfg(test)]
mod phase_tests {
    use super::{BackupPhase, RestorePhase};

    #[test]
    fn every_phase_is_named_as_the_api_spells_it() {
        use BackupPhase::*;
        for phase in [Queued, Running, Completed, PartiallyFailed, Failed, Expired] {
            assert_eq!(serde_json::json!(phase), phase.as_str());
        }
        use RestorePhase as R;
        for phase in [
            R::Queued,
            R::Running,
            R::Completed,
            R::PartiallyFailed,
            R::Failed,
        ] {
            assert_eq!(serde_json::json!(phase), phase.as_str());
        }
    }
}
