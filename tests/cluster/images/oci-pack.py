#!/usr/bin/env python3
"""Packs a root file system directory into a one-layer OCI image archive for `ctr images import`.

usage: oci-pack.py ROOTFS IMAGE_NAME OUT.tar [--cmd ARG]... [--env K=V]... [--user U] [--workdir D]

The layer is reproducible (sorted entries, mtime 0, numeric owners), so the image digest depends
only on the files. The archive is an OCI image layout whose index names the image with the
annotations containerd reads (`io.containerd.image.name`, `org.opencontainers.image.ref.name`).
"""
import argparse, hashlib, io, json, os, tarfile

p = argparse.ArgumentParser()
p.add_argument("rootfs"); p.add_argument("name"); p.add_argument("out")
p.add_argument("--cmd", action="append", default=[])
p.add_argument("--entrypoint", action="append", default=[])
p.add_argument("--env", action="append", default=[])
p.add_argument("--user", default="")
p.add_argument("--workdir", default="/")
a = p.parse_args()

def reset(ti):
    ti.mtime = 0
    ti.uname = ti.gname = ""
    return ti

layer = io.BytesIO()
with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as t:
    for top, dirs, files in os.walk(a.rootfs):
        dirs.sort()
        rel = os.path.relpath(top, a.rootfs)
        if rel != ".":
            t.add(top, arcname=rel, recursive=False, filter=reset)
        for f in sorted(files):
            t.add(os.path.join(top, f), arcname=os.path.normpath(os.path.join(rel, f)), recursive=False, filter=reset)
        for d in dirs:  # symlinks to directories are listed in dirs but not walked
            full = os.path.join(top, d)
            if os.path.islink(full):
                t.add(full, arcname=os.path.normpath(os.path.join(rel, d)), recursive=False, filter=reset)
layer = layer.getvalue()
diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()

blobs = {}
def blob(data, media):
    d = hashlib.sha256(data).hexdigest()
    blobs[d] = data
    return {"mediaType": media, "digest": "sha256:" + d, "size": len(data)}

config = {
    "architecture": "amd64", "os": "linux",
    "config": {"Env": a.env or ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
               "Cmd": a.cmd or None, "Entrypoint": a.entrypoint or None,
               "User": a.user, "WorkingDir": a.workdir},
    "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    "history": [{"created_by": "tests/cluster/images/oci-pack.py"}],
}
cfg = blob(json.dumps(config, sort_keys=True).encode(), "application/vnd.oci.image.config.v1+json")
lay = blob(layer, "application/vnd.oci.image.layer.v1.tar")
manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": cfg, "layers": [lay]}
man = blob(json.dumps(manifest, sort_keys=True).encode(), "application/vnd.oci.image.manifest.v1+json")
man["annotations"] = {"io.containerd.image.name": a.name, "org.opencontainers.image.ref.name": a.name.rsplit(":", 1)[-1]}
man["platform"] = {"architecture": "amd64", "os": "linux"}
index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [man]}

def add(t, name, data):
    ti = tarfile.TarInfo(name); ti.size = len(data); ti.mtime = 0; ti.mode = 0o644
    t.addfile(ti, io.BytesIO(data))

tmp = a.out + ".partial"
with tarfile.open(tmp, "w") as t:
    add(t, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    add(t, "index.json", json.dumps(index, sort_keys=True).encode())
    for d, data in sorted(blobs.items()):
        add(t, "blobs/sha256/" + d, data)
os.replace(tmp, a.out)
print(man["digest"])
