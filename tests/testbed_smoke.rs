//! Proves the test bed: each check of the test-bed issue is one test, asserting real behaviour.

mod support;

use std::time::Duration;

use sha2::{Digest, Sha256};
use support::{Bed, unique};

const WAIT: Duration = Duration::from_secs(90);

#[test]
fn server_is_kubernetes_1_36_and_rbac_refuses_an_unprivileged_user() {
    let bed = Bed::get();
    let version = bed.kubectl_ok(&["version", "-o", "json"]);
    let version: serde_json::Value = serde_json::from_str(&version).expect("kubectl version JSON");
    let server = version["serverVersion"]["gitVersion"]
        .as_str()
        .unwrap_or_default();
    if !bed.external {
        assert!(
            server.starts_with("v1.36."),
            "server version is {server}, expected v1.36.x"
        );
    }
    let admin = bed.kubectl(&["auth", "can-i", "list", "secrets", "--all-namespaces"]);
    assert_eq!(
        admin.as_deref().map(str::trim),
        Ok("yes"),
        "the bed's admin must be allowed"
    );
    let stranger = bed.kubectl(&[
        "auth",
        "can-i",
        "list",
        "secrets",
        "--all-namespaces",
        "--as",
        "mallory",
    ]);
    assert!(
        stranger.is_err(),
        "RBAC must refuse a user without rights, got {stranger:?}"
    );
    assert!(
        stranger.unwrap_err().contains("no"),
        "kubectl auth can-i answers 'no'"
    );
}

fn volume_dir(bed: &Bed, namespace: &str, pvc: &str) -> std::path::PathBuf {
    let volume = bed
        .jsonpath(&["-n", namespace, "pvc", pvc], "{.spec.volumeName}")
        .expect("bound PVC has a volume");
    let handle = bed
        .jsonpath(&["pv", &volume], "{.spec.csi.volumeHandle}")
        .expect("CSI volume handle");
    std::path::PathBuf::from(bed.var("CSI_STATE_DIR").expect("CSI_STATE_DIR")).join(handle)
}

fn wait_bound(bed: &Bed, namespace: &str, pvc: &str) {
    bed.wait_for_phase(namespace, "pvc", pvc, "Bound", WAIT);
}

fn pvc_yaml(name: &str, snapshot: Option<&str>) -> String {
    let source = snapshot
        .map(|s| format!("\n  dataSource: {{apiGroup: snapshot.storage.k8s.io, kind: VolumeSnapshot, name: {s}}}"))
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {name}}}\nspec:\n  accessModes: [ReadWriteOnce]\n  resources: {{requests: {{storage: 1Gi}}}}{source}\n"
    )
}

#[test]
fn volume_snapshot_restores_same_bytes_in_same_and_other_namespace() {
    let bed = Bed::get();
    let Some(_) = bed.require("CSI_STATE_DIR", "reading volume contents from the host") else {
        return;
    };
    let source = bed.namespace("smoke-vol");
    let other = bed.namespace("smoke-vol-other");
    let ns = source.name.as_str();
    bed.kubectl_with_stdin(
        &["-n", ns, "apply", "-f", "-"],
        Some(pvc_yaml("data", None).as_bytes()),
    )
    .expect("PVC");
    wait_bound(&bed, ns, "data");
    let payload: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
    std::fs::write(volume_dir(&bed, ns, "data").join("payload.bin"), &payload)
        .expect("write into the volume");

    bed.kubectl_with_stdin(
        &["-n", ns, "apply", "-f", "-"],
        Some(b"apiVersion: snapshot.storage.k8s.io/v1\nkind: VolumeSnapshot\nmetadata: {name: snap}\nspec: {source: {persistentVolumeClaimName: data}}\n"),
    )
    .expect("VolumeSnapshot");
    let content = bed.wait_until(
        "the VolumeSnapshot to become readyToUse",
        WAIT,
        || {
            let ready = bed.jsonpath(
                &["-n", ns, "volumesnapshot", "snap"],
                "{.status.readyToUse}",
            );
            (ready.as_deref() == Some("true")).then(|| {
                bed.jsonpath(
                    &["-n", ns, "volumesnapshot", "snap"],
                    "{.status.boundVolumeSnapshotContentName}",
                )
            })?
        },
        || bed.describe(ns),
    );
    let handle = bed
        .jsonpath(
            &["volumesnapshotcontent", &content],
            "{.status.snapshotHandle}",
        )
        .expect("snapshot handle");
    let driver = bed
        .jsonpath(&["volumesnapshotcontent", &content], "{.spec.driver}")
        .expect("driver");

    // Same namespace: a PVC whose dataSource is the snapshot.
    bed.kubectl_with_stdin(
        &["-n", ns, "apply", "-f", "-"],
        Some(pvc_yaml("copy", Some("snap")).as_bytes()),
    )
    .expect("PVC from snapshot");
    wait_bound(&bed, ns, "copy");
    let copied =
        std::fs::read(volume_dir(&bed, ns, "copy").join("payload.bin")).expect("restored file");
    assert!(
        copied == payload,
        "the PVC restored in the same namespace holds different bytes"
    );

    // Another namespace: a pre-provisioned VolumeSnapshotContent bound to a new VolumeSnapshot there.
    let imported = unique("smoke-import");
    let on = other.name.as_str();
    bed.apply(&format!(
        "apiVersion: snapshot.storage.k8s.io/v1\nkind: VolumeSnapshotContent\nmetadata: {{name: {imported}}}\nspec:\n  deletionPolicy: Retain\n  driver: {driver}\n  source: {{snapshotHandle: {handle}}}\n  volumeSnapshotRef: {{name: imported, namespace: {on}}}\n---\napiVersion: snapshot.storage.k8s.io/v1\nkind: VolumeSnapshot\nmetadata: {{name: imported, namespace: {on}}}\nspec: {{source: {{volumeSnapshotContentName: {imported}}}}}\n"
    ));
    bed.wait_until(
        "the imported VolumeSnapshot to become readyToUse",
        WAIT,
        || {
            (bed.jsonpath(
                &["-n", on, "volumesnapshot", "imported"],
                "{.status.readyToUse}",
            )
            .as_deref()
                == Some("true"))
            .then_some(())
        },
        || bed.describe(on),
    );
    bed.kubectl_with_stdin(
        &["-n", on, "apply", "-f", "-"],
        Some(pvc_yaml("copy", Some("imported")).as_bytes()),
    )
    .expect("PVC in the other namespace");
    wait_bound(&bed, on, "copy");
    let copied = std::fs::read(volume_dir(&bed, on, "copy").join("payload.bin"))
        .expect("restored file in the other namespace");
    assert!(
        copied == payload,
        "the PVC restored in another namespace holds different bytes"
    );
    let _ = bed.kubectl(&[
        "-n",
        on,
        "delete",
        "volumesnapshot",
        "imported",
        "--wait=false",
    ]);
    let _ = bed.kubectl(&["delete", "volumesnapshotcontent", &imported, "--wait=false"]);
}

#[test]
fn exec_runs_host_command_with_per_namespace_env_and_streams_100mb_intact() {
    let bed = Bed::get();
    if bed.external {
        eprintln!(
            "SKIPPED on REWIND_E2E_KUBECONFIG cluster: host exec is a kwok feature of the local bed"
        );
        return;
    }
    let project = bed.namespace("smoke-exec");
    let ns = project.name.as_str();
    bed.bind_exec(ns, ns);
    bed.kubectl_with_stdin(
        &["-n", ns, "apply", "-f", "-"],
        Some(b"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: app}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: app}}\n  template:\n    metadata: {labels: {app: app}}\n    spec: {containers: [{name: app, image: busybox}]}\n"),
    )
    .expect("Deployment");
    bed.wait_until(
        "the Deployment to be Available",
        WAIT,
        || {
            (bed.jsonpath(&["-n", ns, "deployment", "app"], "{.status.readyReplicas}")
                .as_deref()
                == Some("1"))
            .then_some(())
        },
        || bed.describe(ns),
    );
    let pod = bed
        .jsonpath(&["-n", ns, "pods"], "{.items[0].metadata.name}")
        .expect("a pod");
    let ready = bed.jsonpath(
        &["-n", ns, "pod", &pod],
        "{.status.conditions[?(@.type==\"Ready\")].status}",
    );
    assert_eq!(ready.as_deref(), Some("True"), "the pod is Ready");

    let env = bed.kubectl_ok(&["-n", ns, "exec", &pod, "--", "sh", "-c", "echo $PGDATABASE"]);
    assert_eq!(
        env.trim(),
        ns,
        "exec runs with the environment chosen for its namespace"
    );

    // kwok's exec does not pass stdin's end to the command, so the command reads an exact count.
    let size = 100_000_000usize;
    let mut data = vec![0u8; size];
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    for chunk in data.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    let sent = hex::encode(Sha256::digest(&data));
    let received = bed
        .kubectl_with_stdin(
            &[
                "-n",
                ns,
                "exec",
                "-i",
                &pod,
                "--",
                "sh",
                "-c",
                &format!("head -c {size} | sha256sum"),
            ],
            Some(&data),
        )
        .expect("stdin through exec");
    assert_eq!(
        received.split_whitespace().next(),
        Some(sent.as_str()),
        "100 MB through exec stdin arrive intact"
    );
    let echoed = bed
        .kubectl(&[
            "-n",
            ns,
            "exec",
            &pod,
            "--",
            "sh",
            "-c",
            &format!("head -c {size} /dev/zero"),
        ])
        .expect("stdout through exec");
    assert_eq!(
        echoed.len(),
        size,
        "100 MB through exec stdout arrive whole"
    );
}

fn http(endpoint: &str, method: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let address = endpoint.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).expect("connect to the S3 server");
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    response
}

#[tokio::test]
async fn s3_bucket_create_put_get_list_delete() {
    use futures::TryStreamExt;
    use object_store::{ObjectStore, ObjectStoreExt, PutPayload, aws::AmazonS3Builder, path::Path};
    let bed = Bed::get();
    let Some(endpoint) = bed.require("S3_ENDPOINT", "the S3 check") else {
        return;
    };
    let bucket = unique("smoke-bucket");
    let created = http(&endpoint, "PUT", &format!("/{bucket}"));
    assert!(
        created.starts_with("HTTP/1.1 200"),
        "bucket creation answered: {created}"
    );
    let store = AmazonS3Builder::new()
        .with_endpoint(&endpoint)
        .with_allow_http(true)
        .with_bucket_name(&bucket)
        .with_region(bed.var("AWS_REGION").unwrap_or("us-east-1"))
        .with_access_key_id(bed.var("AWS_ACCESS_KEY_ID").unwrap_or_default())
        .with_secret_access_key(bed.var("AWS_SECRET_ACCESS_KEY").unwrap_or_default())
        .build()
        .expect("S3 client");
    let path = Path::from("dir/hello.txt");
    store
        .put(&path, PutPayload::from_static(b"hello s3"))
        .await
        .expect("put");
    let got = store
        .get(&path)
        .await
        .expect("get")
        .bytes()
        .await
        .expect("body");
    assert_eq!(&got[..], b"hello s3");
    let listed: Vec<_> = store
        .list(Some(&Path::from("dir")))
        .try_collect()
        .await
        .expect("list");
    assert_eq!(listed.len(), 1, "list shows the one object");
    store.delete(&path).await.expect("delete");
    assert!(store.get(&path).await.is_err(), "a deleted object is gone");
    let deleted = http(&endpoint, "DELETE", &format!("/{bucket}"));
    assert!(
        deleted.starts_with("HTTP/1.1 204"),
        "bucket deletion answered: {deleted}"
    );
}

#[test]
fn helm_installs_upgrades_uninstalls_a_chart() {
    let bed = Bed::get();
    let project = bed.namespace("smoke-helm");
    let ns = project.name.as_str();
    let chart = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(chart.path().join("templates")).expect("templates dir");
    std::fs::write(
        chart.path().join("Chart.yaml"),
        "apiVersion: v2\nname: smoke\nversion: 0.1.0\n",
    )
    .expect("Chart.yaml");
    std::fs::write(chart.path().join("values.yaml"), "greeting: hello\n").expect("values");
    std::fs::write(
        chart.path().join("templates/configmap.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: greeting}\ndata: {text: {{ .Values.greeting | quote }}}\n",
    )
    .expect("template");
    let dir = chart.path().to_string_lossy().to_string();
    bed.helm(&[
        "install",
        "smoke",
        &dir,
        "-n",
        ns,
        "--wait",
        "--timeout",
        "60s",
    ])
    .expect("helm install");
    assert_eq!(
        bed.jsonpath(&["-n", ns, "configmap", "greeting"], "{.data.text}")
            .as_deref(),
        Some("hello")
    );
    bed.helm(&[
        "upgrade",
        "smoke",
        &dir,
        "-n",
        ns,
        "--set",
        "greeting=goodbye",
    ])
    .expect("helm upgrade");
    assert_eq!(
        bed.jsonpath(&["-n", ns, "configmap", "greeting"], "{.data.text}")
            .as_deref(),
        Some("goodbye")
    );
    bed.helm(&["uninstall", "smoke", "-n", ns, "--wait"])
        .expect("helm uninstall");
    assert!(
        bed.kubectl(&["-n", ns, "get", "configmap", "greeting"])
            .is_err(),
        "uninstall removes the chart's objects"
    );
}

#[test]
fn namespace_deletion_completes_and_owned_objects_are_garbage_collected() {
    let bed = Bed::get();
    let name = unique("smoke-gc");
    bed.kubectl_ok(&["create", "namespace", &name]);
    bed.kubectl_ok(&[
        "-n",
        &name,
        "create",
        "configmap",
        "owner",
        "--from-literal=a=b",
    ]);
    let uid = bed
        .jsonpath(&["-n", &name, "configmap", "owner"], "{.metadata.uid}")
        .expect("owner uid");
    bed.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: owned\n  namespace: {name}\n  ownerReferences: [{{apiVersion: v1, kind: ConfigMap, name: owner, uid: {uid}}}]\nstringData: {{k: v}}\n"
    ));
    bed.kubectl_ok(&["-n", &name, "delete", "configmap", "owner"]);
    bed.wait_until(
        "the owned Secret to be garbage-collected",
        WAIT,
        || {
            bed.kubectl(&["-n", &name, "get", "secret", "owned"])
                .is_err()
                .then_some(())
        },
        || bed.describe(&name),
    );
    bed.kubectl_ok(&["delete", "namespace", &name, "--wait=false"]);
    bed.wait_until(
        "the namespace deletion to complete",
        WAIT,
        || {
            bed.kubectl(&["get", "namespace", &name])
                .is_err()
                .then_some(())
        },
        || bed.describe(&name),
    );
}
