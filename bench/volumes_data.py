#!/usr/bin/env python3
"""Test trees for `make bench-volumes`, deterministic from a seed.

    volumes_data.py mixed DIR      ~2 GB: a few large files, medium and small ones; half of the
                                   bytes log-like text (compresses ~4x), half random
    volumes_data.py small DIR      1,000,000 files of 100-2,000 bytes in 100 x 10 directories
    volumes_data.py change DIR UNDO   day 2: 1% of the files (every 100th in sorted order, seeded
                                   offset) get 4 KiB rewritten at a seeded place; what was there
                                   (bytes, size, times) is saved in UNDO first
    volumes_data.py undo DIR UNDO  puts the day-1 tree back
"""
import os
import pickle
import random
import sys

rng = random.Random(20261130)
WORDS = [b"GET", b"POST", b"/api/v1/orders", b"/healthz", b"200", b"404", b"500", b"user", b"shop", b"cart",
         b"INFO", b"WARN", b"ERROR", b"latency_ms", b"request_id", b"session", b"checkout", b"payment"]
POOL = [b" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))) + b" %08x %d\n" % (rng.getrandbits(32), rng.randint(0, 10**6))
        for _ in range(50_000)]


def text(n):
    out = b"".join(rng.choices(POOL, k=n // 40 + 1))
    return out[:n]


def data(n, compressible):
    return text(n) if compressible else rng.randbytes(n)


def write(path, content):
    with open(path, "wb") as f:
        f.write(content)


def mixed(root):
    os.makedirs(root)
    big = os.path.join(root, "big")
    os.makedirs(big)
    for i in range(8):  # 8 x 100 MB
        with open(os.path.join(big, f"blob-{i:02}.bin"), "wb") as f:
            for _ in range(25):
                f.write(data(4 << 20, i % 2 == 0))
    for d in range(20):  # 20 x 20 x ~1.5 MB = ~600 MB
        sub = os.path.join(root, "media", f"album-{d:02}")
        os.makedirs(sub)
        for i in range(20):
            write(os.path.join(sub, f"track-{i:02}.dat"), data(rng.randint(1 << 20, 2 << 20), i % 2 == 0))
    for d in range(100):  # 100 x 200 x ~30 KB = ~600 MB
        sub = os.path.join(root, "docs", f"{d:03}")
        os.makedirs(sub)
        for i in range(200):
            write(os.path.join(sub, f"doc-{i:03}.txt"), data(rng.randint(1000, 60_000), i % 3 != 0))


def small(root):
    os.makedirs(root)
    for a in range(100):
        for b in range(10):
            sub = os.path.join(root, f"{a:02}", f"{b}")
            os.makedirs(sub)
            for i in range(1000):
                write(os.path.join(sub, f"f{i:04}"), data(rng.randint(100, 2000), i % 4 != 0))


def files(root):
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        out.extend(os.path.join(dirpath, f) for f in sorted(filenames))
    return out


def change(root, undo):
    if os.path.exists(undo):
        sys.exit(f"{undo} exists: undo the last change first")
    chosen = files(root)[7::100]
    saved = []
    for path in chosen:
        st = os.stat(path)
        at = rng.randrange(0, max(st.st_size - 4096, 0) + 1)
        with open(path, "rb") as f:
            f.seek(at)
            old = f.read(4096)
        saved.append((path, at, old, st.st_size, st.st_atime_ns, st.st_mtime_ns))
    with open(undo + ".tmp", "wb") as f:
        pickle.dump(saved, f)
    os.rename(undo + ".tmp", undo)
    changed = 0
    for path, at, old, _, _, _ in saved:
        with open(path, "r+b") as f:
            f.seek(at)
            f.write(rng.randbytes(len(old)))
        changed += len(old)
    print(f"{len(saved)} files, {changed} bytes")


def undo(root, undo_path):
    if not os.path.exists(undo_path):
        return
    with open(undo_path, "rb") as f:
        saved = pickle.load(f)
    for path, at, old, size, atime, mtime in saved:
        with open(path, "r+b") as f:
            f.seek(at)
            f.write(old)
            f.truncate(size)
        os.utime(path, ns=(atime, mtime))
    os.remove(undo_path)


if __name__ == "__main__":
    what, root = sys.argv[1], sys.argv[2]
    {"mixed": lambda: mixed(root), "small": lambda: small(root),
     "change": lambda: change(root, sys.argv[3]), "undo": lambda: undo(root, sys.argv[3])}[what]()
