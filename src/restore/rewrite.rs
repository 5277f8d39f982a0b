//! A backed-up manifest made fit for a new namespace (pure): namespace rewritten,
//! owner references dropped, side effects defused, route-stealing objects skipped.

use serde_json::Value;

/// What to do with one backed-up object.
#[derive(Clone, Debug, PartialEq)]
pub enum Rewritten {
    /// Create this object in the target namespace.
    Create(Value),
    /// Leave it out, with the reason shown in `status.skipped`.
    Skip(String),
}

/// Gateway API route kinds: a copy would attach to the same Gateway and hostnames.
const ROUTE_KINDS: &[&str] = &["HTTPRoute", "GRPCRoute", "TLSRoute", "TCPRoute", "UDPRoute"];

fn group_of(api_version: &str) -> &str {
    api_version
        .rsplit_once('/')
        .map(|(group, _)| group)
        .unwrap_or("")
}

/// Rewrites one object from `source` into `target` (pure).
pub fn rewrite_for_restore(mut object: Value, source: &str, target: &str) -> Rewritten {
    let kind = object["kind"].as_str().unwrap_or_default().to_string();
    let group = group_of(object["apiVersion"].as_str().unwrap_or_default()).to_string();
    if kind == "Ingress" && group == "networking.k8s.io" {
        return Rewritten::Skip(
            "an Ingress would take the original project's hosts; create one with new hosts by hand if the copy needs traffic".into(),
        );
    }
    if group == "gateway.networking.k8s.io" && ROUTE_KINDS.contains(&kind.as_str()) {
        return Rewritten::Skip(format!(
            "a {kind} would attach to the original's Gateway and hostnames; create one with new hostnames by hand"
        ));
    }
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.insert("namespace".into(), Value::String(target.to_string()));
        // Owners get new UIDs when recreated; a stale reference would have the copy garbage-collected.
        metadata.remove("ownerReferences");
        for server_owned in [
            "uid",
            "resourceVersion",
            "managedFields",
            "creationTimestamp",
            "generation",
            "selfLink",
        ] {
            metadata.remove(server_owned);
        }
    }
    if let Some(object) = object.as_object_mut() {
        object.remove("status");
    }
    match (group.as_str(), kind.as_str()) {
        ("batch", "CronJob") => {
            if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
                spec.insert("suspend".into(), Value::Bool(true));
            }
        }
        ("rbac.authorization.k8s.io", "RoleBinding") => {
            if let Some(subjects) = object.get_mut("subjects").and_then(Value::as_array_mut) {
                for subject in subjects {
                    if subject["namespace"].as_str() == Some(source) {
                        subject["namespace"] = Value::String(target.to_string());
                    }
                }
            }
        }
        ("", "PersistentVolumeClaim") => {
            if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
                spec.remove("volumeName");
                spec.remove("dataSource");
                spec.remove("dataSourceRef");
            }
        }
        _ => {}
    }
    Rewritten::Create(object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn created(rewritten: Rewritten) -> Value {
        match rewritten {
            Rewritten::Create(object) => object,
            Rewritten::Skip(reason) => panic!("unexpected skip: {reason}"),
        }
    }

    #[test]
    fn namespace_is_rewritten_and_owner_references_dropped() {
        let object = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "namespace": "shop", "ownerReferences": [{"uid": "x"}], "uid": "y"}});
        let out = created(rewrite_for_restore(object, "shop", "shop-restore-1"));
        assert_eq!(
            out["metadata"],
            json!({"name": "a", "namespace": "shop-restore-1"})
        );
    }

    #[test]
    fn cronjobs_are_restored_suspended() {
        let cron = json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c"}, "spec": {"suspend": false, "schedule": "* * * * *"}});
        assert_eq!(
            created(rewrite_for_restore(cron, "a", "b"))["spec"]["suspend"],
            true
        );
    }

    #[test]
    fn role_binding_subjects_follow_the_project_but_foreign_ones_stay() {
        let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "rb"},
            "subjects": [{"kind": "ServiceAccount", "name": "app", "namespace": "shop"},
                         {"kind": "ServiceAccount", "name": "ci", "namespace": "tools"}]});
        let out = created(rewrite_for_restore(binding, "shop", "shop-r"));
        assert_eq!(out["subjects"][0]["namespace"], "shop-r");
        assert_eq!(out["subjects"][1]["namespace"], "tools");
    }

    #[test]
    fn ingresses_and_gateway_routes_are_skipped_with_a_reason() {
        let ingress = json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "web"}});
        assert!(
            matches!(rewrite_for_restore(ingress, "a", "b"), Rewritten::Skip(reason) if reason.contains("hosts"))
        );
        let route = json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "web"}});
        assert!(matches!(
            rewrite_for_restore(route, "a", "b"),
            Rewritten::Skip(_)
        ));
    }

    #[test]
    fn pvcs_lose_binding_and_old_data_sources() {
        let pvc = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
            "spec": {"volumeName": "pv-1", "dataSource": {"kind": "VolumeSnapshot"}, "storageClassName": "fast"}});
        assert_eq!(
            created(rewrite_for_restore(pvc, "a", "b"))["spec"],
            json!({"storageClassName": "fast"})
        );
    }
}
