//! Strips server-owned fields from a manifest so what is stored is what a restore needs.

use serde_json::Value;

/// Metadata fields the API server owns.
const SERVER_OWNED_METADATA: &[&str] = &[
    "uid",
    "resourceVersion",
    "managedFields",
    "creationTimestamp",
    "generation",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

/// Annotations written by controllers about a binding that will not exist after a restore.
const BINDING_ANNOTATIONS: &[&str] = &[
    "pv.kubernetes.io/bind-completed",
    "pv.kubernetes.io/bound-by-controller",
    "volume.beta.kubernetes.io/storage-provisioner",
    "volume.kubernetes.io/storage-provisioner",
    "volume.kubernetes.io/selected-node",
];

/// Labels the Job controller derives from the Job's uid.
const JOB_UID_LABELS: &[&str] = &["controller-uid", "batch.kubernetes.io/controller-uid"];

/// Removes server-owned fields in place (pure). Namespaces and owner
/// references are kept: a restore rewrites them knowing the target.
pub fn sanitize_for_backup(group: &str, kind: &str, object: &mut Value) {
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        for field in SERVER_OWNED_METADATA {
            metadata.remove(*field);
        }
        if let Some(annotations) = metadata
            .get_mut("annotations")
            .and_then(Value::as_object_mut)
        {
            for key in BINDING_ANNOTATIONS {
                annotations.remove(*key);
            }
            if annotations.is_empty() {
                metadata.remove("annotations");
            }
        }
    }
    if let Some(object) = object.as_object_mut() {
        object.remove("status");
    }
    match (group, kind) {
        ("", "Service") => sanitize_service(object),
        ("", "PersistentVolumeClaim") => {
            if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
                spec.remove("volumeName");
            }
        }
        ("", "Pod") => {
            if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
                spec.remove("nodeName");
            }
        }
        ("batch", "Job") => sanitize_job(object),
        _ => {}
    }
}

fn sanitize_service(object: &mut Value) {
    let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    // A headless Service keeps `clusterIP: None`: that is the user's choice, not an allocation.
    let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
    if !headless {
        spec.remove("clusterIP");
        spec.remove("clusterIPs");
    }
    spec.remove("healthCheckNodePort");
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for port in ports {
            if let Some(port) = port.as_object_mut() {
                port.remove("nodePort");
            }
        }
    }
}

fn sanitize_job(object: &mut Value) {
    let manual_selector = object["spec"]["manualSelector"].as_bool() == Some(true);
    if manual_selector {
        return;
    }
    if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
        spec.remove("selector");
        if let Some(labels) = spec
            .get_mut("template")
            .and_then(|t| t.get_mut("metadata"))
            .and_then(|m| m.get_mut("labels"))
            .and_then(Value::as_object_mut)
        {
            for key in JOB_UID_LABELS {
                labels.remove(*key);
            }
        }
    }
    if let Some(labels) = object
        .get_mut("metadata")
        .and_then(|m| m.get_mut("labels"))
        .and_then(Value::as_object_mut)
    {
        for key in JOB_UID_LABELS {
            labels.remove(*key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn server_owned_metadata_and_status_are_stripped() {
        let mut cm = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "namespace": "p", "uid": "u", "resourceVersion": "7",
                         "managedFields": [], "creationTimestamp": "2026-01-01T00:00:00Z", "labels": {"x": "y"}},
            "data": {"k": "v"}, "status": {}
        });
        sanitize_for_backup("", "ConfigMap", &mut cm);
        assert_eq!(
            cm,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "namespace": "p", "labels": {"x": "y"}}, "data": {"k": "v"}})
        );
    }

    #[test]
    fn service_loses_cluster_ips_and_node_ports_but_headless_stays_headless() {
        let mut svc = json!({"metadata": {"name": "web"}, "spec": {"type": "NodePort", "clusterIP": "10.0.0.7",
            "clusterIPs": ["10.0.0.7"], "ports": [{"port": 80, "nodePort": 30080}]}});
        sanitize_for_backup("", "Service", &mut svc);
        assert_eq!(
            svc["spec"],
            json!({"type": "NodePort", "ports": [{"port": 80}]})
        );
        let mut headless = json!({"metadata": {"name": "db"}, "spec": {"clusterIP": "None", "clusterIPs": ["None"]}});
        sanitize_for_backup("", "Service", &mut headless);
        assert_eq!(headless["spec"]["clusterIP"], "None");
    }

    #[test]
    fn pvc_loses_its_volume_binding() {
        let mut pvc = json!({"metadata": {"name": "data", "annotations": {"pv.kubernetes.io/bind-completed": "yes"}},
            "spec": {"volumeName": "pvc-123", "storageClassName": "fast"}});
        sanitize_for_backup("", "PersistentVolumeClaim", &mut pvc);
        assert_eq!(
            pvc,
            json!({"metadata": {"name": "data"}, "spec": {"storageClassName": "fast"}})
        );
    }

    #[test]
    fn job_loses_its_generated_selector() {
        let mut job = json!({"metadata": {"name": "j", "labels": {"controller-uid": "u"}},
            "spec": {"selector": {"matchLabels": {"controller-uid": "u"}},
                     "template": {"metadata": {"labels": {"controller-uid": "u", "app": "x"}}}}});
        sanitize_for_backup("batch", "Job", &mut job);
        assert_eq!(
            job,
            json!({"metadata": {"name": "j", "labels": {}},
            "spec": {"template": {"metadata": {"labels": {"app": "x"}}}}})
        );
    }
}
