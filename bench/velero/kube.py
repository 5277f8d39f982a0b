#!/usr/bin/env python3
"""Small, dependency-free Kubernetes client for `bench/peer.sh` (stdlib only).

The harness times both tools the same way: the object that starts the work (a Velero Backup or
Restore, a Rewind AccountBackup or ProjectRestore) is POSTed by this script, which then polls it
over one kept-alive connection every 0.1 s until its phase is final. Forking kubectl ten times a
second would cost the 2-core bed more CPU than the tools under test.

  kube.py objects NAMESPACE COUNT         COUNT/2 ConfigMaps and COUNT/2 Secrets, 32 at a time
  kube.py timed FILE.json                 create the object in FILE, wait for a final phase,
                                          print {"seconds": wall, "status": {...}} (and a
                                          line on stderr)
  kube.py get API_PATH                    print the object at API_PATH as JSON (404: null)

The kubeconfig is $KUBECONFIG (client certificate, as the bed's kwokctl writes it).
"""
import base64
import http.client
import json
import os
import ssl
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

FINAL = {"Completed", "PartiallyFailed", "Failed", "FailedValidation"}


def config():
    raw = subprocess.run(
        [os.environ.get("KUBECTL", "kubectl"), "config", "view", "--raw", "--minify", "-o", "json"],
        check=True, capture_output=True, text=True,
    ).stdout
    cfg = json.loads(raw)
    cluster = cfg["clusters"][0]["cluster"]
    user = cfg["users"][0]["user"]
    context = ssl.create_default_context(cafile=cluster["certificate-authority"])
    context.load_cert_chain(user["client-certificate"], user["client-key"])
    host_port = cluster["server"].removeprefix("https://")
    host, port = host_port.rsplit(":", 1)
    return host, int(port), context


HOST, PORT, TLS = config()
local = threading.local()


def request(method, path, body=None):
    """One API request on this thread's kept-alive connection; (status, parsed JSON body)."""
    for attempt in range(5):
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPSConnection(HOST, PORT, context=TLS, timeout=60)
        try:
            data = json.dumps(body).encode() if body is not None else None
            headers = {"Content-Type": "application/json", "Accept": "application/json"}
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            text = response.read()
            if response.status == 429 or response.status >= 500:
                time.sleep(0.2 * (attempt + 1))
                continue
            return response.status, (json.loads(text) if text else None)
        except (http.client.HTTPException, OSError):
            local.conn = None
            time.sleep(0.2 * (attempt + 1))
    raise SystemExit(f"kube.py: {method} {path} failed 5 times")


def api_path(obj, plural=None):
    group_version = obj["apiVersion"]
    prefix = f"/api/{group_version}" if "/" not in group_version else f"/apis/{group_version}"
    plural = plural or obj["kind"].lower() + "s"
    namespace = obj["metadata"].get("namespace")
    return f"{prefix}/namespaces/{namespace}/{plural}" if namespace else f"{prefix}/{plural}"


def objects(namespace, count):
    value = lambda i: f"{i:064}"

    def create(i):
        name = f"obj-{i:06}"
        if i % 2 == 0:
            body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"value": value(i)}}
            path = f"/api/v1/namespaces/{namespace}/configmaps"
        else:
            encoded = base64.b64encode(value(i).encode()).decode()
            body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": {"value": encoded}}
            path = f"/api/v1/namespaces/{namespace}/secrets"
        status, answer = request("POST", path, body)
        if status not in (201, 409):
            raise SystemExit(f"kube.py: creating {name}: HTTP {status}: {answer}")

    with ThreadPoolExecutor(32) as pool:
        list(pool.map(create, range(count)))


def timed(file):
    obj = json.load(open(file))
    collection = api_path(obj)
    started = time.monotonic()
    status, answer = request("POST", collection, obj)
    if status != 201:
        raise SystemExit(f"kube.py: creating {obj['kind']} {obj['metadata']['name']}: HTTP {status}: {answer}")
    path = f"{collection}/{obj['metadata']['name']}"
    while True:
        status, answer = request("GET", path)
        phase = ((answer or {}).get("status") or {}).get("phase")
        if phase in FINAL:
            seconds = time.monotonic() - started
            print(json.dumps({"seconds": seconds, "status": answer["status"]}))
            print(f"{obj['kind']} {obj['metadata']['name']}: {phase} in {seconds:.1f} s", file=sys.stderr)
            return
        if time.monotonic() - started > 3600:
            raise SystemExit(f"kube.py: {path} not final after an hour (phase {phase})")
        time.sleep(0.1)


def main():
    command = sys.argv[1]
    if command == "objects":
        objects(sys.argv[2], int(sys.argv[3]))
    elif command == "timed":
        timed(sys.argv[2])
    elif command == "get":
        status, answer = request("GET", sys.argv[2])
        print(json.dumps(answer if status == 200 else None))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
