//! Which namespaced API types a backup captures: API discovery minus the deny-list.
//!
//! The deny-list (documented in docs/backup.md) holds what the cluster
//! recreates on its own or what would be wrong to restore: Events, Endpoints,
//! EndpointSlices, Leases, ControllerRevisions, VolumeSnapshots (volumes are
//! captured as physical snapshots instead), and per object: Pods, ReplicaSets
//! and Jobs owned by a controller, service-account token Secrets and the
//! cluster-published `kube-root-ca.crt` ConfigMap.

use kube::Client;
use kube::discovery::{ApiCapabilities, ApiResource, Discovery, Scope, verbs};
use serde_json::Value;

/// One API type whose objects a backup lists.
#[derive(Clone, Debug)]
pub struct BackedUpType {
    /// Group, version, kind and plural of the type.
    pub resource: ApiResource,
}

/// Types that are never backed up, as (group, kind).
const DENIED_TYPES: &[(&str, &str)] = &[
    ("", "Event"),
    ("events.k8s.io", "Event"),
    ("", "Endpoints"),
    ("discovery.k8s.io", "EndpointSlice"),
    ("coordination.k8s.io", "Lease"),
    ("apps", "ControllerRevision"),
    ("snapshot.storage.k8s.io", "VolumeSnapshot"),
    ("metrics.k8s.io", "PodMetrics"),
];

/// Kinds skipped when a controller owns the object: the controller recreates them.
const CONTROLLER_OWNED_KINDS: &[(&str, &str)] =
    &[("", "Pod"), ("apps", "ReplicaSet"), ("batch", "Job")];

/// Namespaced kinds in the order a restore must create them: what others
/// depend on first. Kinds not listed (custom resources among them) come after.
const RESTORE_ORDER: &[(&str, &str)] = &[
    ("", "ResourceQuota"),
    ("", "LimitRange"),
    ("", "ServiceAccount"),
    ("", "Secret"),
    ("", "ConfigMap"),
    ("", "PersistentVolumeClaim"),
    ("rbac.authorization.k8s.io", "Role"),
    ("rbac.authorization.k8s.io", "RoleBinding"),
    ("networking.k8s.io", "NetworkPolicy"),
    ("", "Service"),
    ("policy", "PodDisruptionBudget"),
    ("apps", "StatefulSet"),
    ("apps", "Deployment"),
    ("apps", "DaemonSet"),
    ("apps", "ReplicaSet"),
    ("", "ReplicationController"),
    ("batch", "CronJob"),
    ("batch", "Job"),
    ("", "Pod"),
    ("autoscaling", "HorizontalPodAutoscaler"),
    ("networking.k8s.io", "Ingress"),
];

/// Where a type goes in the restore order: its index in [`RESTORE_ORDER`], unknown kinds last (pure).
pub fn restore_rank(group: &str, kind: &str) -> usize {
    RESTORE_ORDER
        .iter()
        .position(|(g, k)| *g == group && *k == kind)
        .unwrap_or(RESTORE_ORDER.len())
}

/// Whether objects of this type are backed up (pure).
pub fn is_backed_up_type(resource: &ApiResource, capabilities: &ApiCapabilities) -> bool {
    capabilities.scope == Scope::Namespaced
        && capabilities.supports_operation(verbs::LIST)
        && capabilities.supports_operation(verbs::CREATE)
        && !resource.plural.contains('/')
        && !DENIED_TYPES
            .iter()
            .any(|(group, kind)| *group == resource.group && *kind == resource.kind)
}

/// Why one listed object is left out of the backup, or `None` to keep it (pure).
pub fn object_skip_reason(group: &str, kind: &str, object: &Value) -> Option<&'static str> {
    let metadata = &object["metadata"];
    let controlled = metadata["ownerReferences"]
        .as_array()
        .is_some_and(|refs| refs.iter().any(|r| r["controller"].as_bool() == Some(true)));
    if controlled
        && CONTROLLER_OWNED_KINDS
            .iter()
            .any(|(g, k)| *g == group && *k == kind)
    {
        return Some("owned by a controller that recreates it");
    }
    if group.is_empty()
        && kind == "Secret"
        && object["type"].as_str() == Some("kubernetes.io/service-account-token")
    {
        return Some("service-account token: the cluster issues a new one");
    }
    if group.is_empty()
        && kind == "ConfigMap"
        && metadata["name"].as_str() == Some("kube-root-ca.crt")
    {
        return Some("published by the cluster in every namespace");
    }
    None
}

/// Discovers every namespaced type to back up, in restore order (then group, kind),
/// so a restore can create a project's objects in one pass over its stream.
pub async fn backed_up_types(client: Client) -> Result<Vec<BackedUpType>, kube::Error> {
    let discovery = Discovery::new(client).run().await?;
    let mut types: Vec<BackedUpType> = discovery
        .groups()
        .flat_map(|group| group.recommended_resources())
        .filter(|(resource, capabilities)| is_backed_up_type(resource, capabilities))
        .map(|(resource, _)| BackedUpType { resource })
        .collect();
    in_restore_order(&mut types);
    Ok(types)
}

/// Sorts types into the order a restore must create them (dependencies first, see
/// [`RESTORE_ORDER`]), then by group and kind (pure). The backup writes each project's stream
/// in this order and the restore reads it front to back.
pub fn in_restore_order(types: &mut [BackedUpType]) {
    types.sort_by(|a, b| {
        let key = |t: &BackedUpType| {
            (
                restore_rank(&t.resource.group, &t.resource.kind),
                t.resource.group.clone(),
                t.resource.kind.clone(),
            )
        };
        key(a).cmp(&key(b))
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::GroupVersionKind;
    use serde_json::json;

    #[test]
    fn types_are_backed_up_in_dependency_order_not_alphabetically() {
        let mut types: Vec<BackedUpType> = [
            ("", "Pod", "pods"),
            ("example.com", "Widget", "widgets"),
            ("apps", "Deployment", "deployments"),
            ("", "ServiceAccount", "serviceaccounts"),
            ("", "ConfigMap", "configmaps"),
            ("rbac.authorization.k8s.io", "RoleBinding", "rolebindings"),
            ("rbac.authorization.k8s.io", "Role", "roles"),
        ]
        .into_iter()
        .map(|(group, kind, plural)| BackedUpType {
            resource: resource(group, kind, plural),
        })
        .collect();
        in_restore_order(&mut types);
        let kinds: Vec<&str> = types.iter().map(|t| t.resource.kind.as_str()).collect();
        assert_eq!(
            kinds,
            vec![
                "ServiceAccount",
                "ConfigMap",
                "Role",
                "RoleBinding",
                "Deployment",
                "Pod",
                "Widget"
            ]
        );
    }

    fn resource(group: &str, kind: &str, plural: &str) -> ApiResource {
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, "v1", kind), plural)
    }

    fn capabilities(scope: Scope, operations: &[&str]) -> ApiCapabilities {
        ApiCapabilities {
            scope,
            subresources: vec![],
            operations: operations.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn namespaced_listable_creatable_types_are_backed_up() {
        let full = capabilities(Scope::Namespaced, &["list", "create", "get"]);
        assert!(is_backed_up_type(
            &resource("", "ConfigMap", "configmaps"),
            &full
        ));
        assert!(is_backed_up_type(
            &resource("example.com", "Widget", "widgets"),
            &full
        ));
    }

    #[test]
    fn deny_listed_cluster_scoped_and_read_only_types_are_not() {
        let full = capabilities(Scope::Namespaced, &["list", "create"]);
        assert!(!is_backed_up_type(&resource("", "Event", "events"), &full));
        assert!(!is_backed_up_type(
            &resource("coordination.k8s.io", "Lease", "leases"),
            &full
        ));
        assert!(!is_backed_up_type(
            &resource("discovery.k8s.io", "EndpointSlice", "endpointslices"),
            &full
        ));
        let cluster = capabilities(Scope::Cluster, &["list", "create"]);
        assert!(!is_backed_up_type(
            &resource("", "Namespace", "namespaces"),
            &cluster
        ));
        let list_only = capabilities(Scope::Namespaced, &["list", "get"]);
        assert!(!is_backed_up_type(
            &resource("metrics.k8s.io", "NodeMetrics", "nodes"),
            &list_only
        ));
    }

    #[test]
    fn controller_owned_pods_and_replicasets_are_skipped_but_bare_pods_kept() {
        let owned = json!({"metadata": {"name": "web-1", "ownerReferences": [{"controller": true, "kind": "ReplicaSet"}]}});
        let bare = json!({"metadata": {"name": "debug"}});
        assert!(object_skip_reason("", "Pod", &owned).is_some());
        assert!(object_skip_reason("apps", "ReplicaSet", &owned).is_some());
        assert!(object_skip_reason("", "Pod", &bare).is_none());
        // An owned PVC (StatefulSet retention policy) holds data: keep it.
        assert!(object_skip_reason("", "PersistentVolumeClaim", &owned).is_none());
    }

    #[test]
    fn dependencies_come_before_the_objects_that_use_them() {
        assert!(restore_rank("", "ServiceAccount") < restore_rank("apps", "Deployment"));
        assert!(restore_rank("", "Secret") < restore_rank("", "Pod"));
        assert!(restore_rank("", "PersistentVolumeClaim") < restore_rank("apps", "StatefulSet"));
        assert!(
            restore_rank("rbac.authorization.k8s.io", "Role")
                < restore_rank("rbac.authorization.k8s.io", "RoleBinding")
        );
        assert!(restore_rank("apps", "Deployment") < restore_rank("example.com", "Widget"));
    }

    #[test]
    fn service_account_tokens_and_root_ca_are_skipped() {
        let token =
            json!({"type": "kubernetes.io/service-account-token", "metadata": {"name": "t"}});
        let opaque = json!({"type": "Opaque", "metadata": {"name": "api-key"}});
        let root_ca = json!({"metadata": {"name": "kube-root-ca.crt"}});
        assert!(object_skip_reason("", "Secret", &token).is_some());
        assert!(object_skip_reason("", "Secret", &opaque).is_none());
        assert!(object_skip_reason("", "ConfigMap", &root_ca).is_some());
    }
}
