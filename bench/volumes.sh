#!/usr/bin/env bash
# `make bench-volumes`: `rewind volume backup` beside restic 0.18.1 `backup` on the same two file
# trees, same disk, one run: a ~2 GB tree of mixed files and a tree of 1,000,000 small files,
# then day 2 after 1% of the files changed. Prints a table with ratios (compare ratios, not
# seconds). Needs no cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
cache=${REWIND_CACHE:-$HOME/.cache/rewind}/bench
mkdir -p "$cache"

# restic 0.18.1 built with go install (bench/restic.sh); GNU time from Debian when missing.
source bench/restic.sh
if [[ ! -x /usr/bin/time ]]; then
  [[ $(id -u) == 0 ]] || { echo "bench: missing GNU time: sudo apt-get install time" >&2; exit 1; }
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null
fi
restic version | grep -q " $RESTIC_VERSION " || { echo "bench: restic on PATH is not $RESTIC_VERSION: $(restic version)" >&2; exit 1; }

# 1. The trees, generated once (deterministic) and cached; a day-2 change left behind by an
# interrupted run is undone first.
for tree in mixed small; do
  python3 bench/volumes_data.py undo "$cache/tree-$tree" "$cache/tree-$tree.undo"
  if [[ ! -d $cache/tree-$tree ]]; then
    echo "bench: generating the $tree tree (once; cached in $cache/tree-$tree)" >&2
    rm -rf "$cache/tree-$tree.tmp"
    python3 bench/volumes_data.py "$tree" "$cache/tree-$tree.tmp"
    mv "$cache/tree-$tree.tmp" "$cache/tree-$tree"
  fi
done

cargo build --release --locked --quiet
rewind=${CARGO_TARGET_DIR:-target}/release/rewind
work=$(mktemp -d "${TMPDIR:-/var/tmp}/rewind-bench-volumes.XXXXXX")
cleanup() {
  for tree in mixed small; do python3 bench/volumes_data.py undo "$cache/tree-$tree" "$cache/tree-$tree.undo" || true; done
  rm -rf "$work"
}
trap cleanup EXIT
export REWIND_REPO_KEY=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
export RESTIC_PASSWORD=bench-password

# measure NAME COMMAND...: runs COMMAND, records wall seconds and peak RSS (KiB) in $work/NAME.
measure() {
  local name=$1; shift
  sync
  /usr/bin/time -f "%e %M" -o "$work/$name.time" "$@" >"$work/$name.out" 2>"$work/$name.err" || { cat "$work/$name.err" >&2; exit 1; }
}
bytes() { du -sb "$1" | cut -f1; }
# Both tools read the tree from the page cache: read it once before the first run.
warm() { find "$1" -type f -print0 | xargs -0 -P2 -n 1000 cat >/dev/null; }

for tree in mixed small; do
  src=$cache/tree-$tree
  echo "bench: $tree tree" >&2
  warm "$src"
  "$rewind" repo --repo "file://$work/rewind-$tree" init >/dev/null
  measure "rewind-$tree-day1" "$rewind" volume --repo "file://$work/rewind-$tree" backup --source "$src"
  bytes "$work/rewind-$tree" >"$work/rewind-$tree.day1"
  restic init --repo "$work/restic-$tree" >/dev/null 2>&1
  measure "restic-$tree-day1" restic --repo "$work/restic-$tree" --cache-dir "$work/restic-cache" backup --host bench "$src"
  bytes "$work/restic-$tree" >"$work/restic-$tree.day1"
  python3 bench/volumes_data.py change "$src" "$src.undo" >"$work/$tree.changed"
  warm "$src"
  measure "rewind-$tree-day2" "$rewind" volume --repo "file://$work/rewind-$tree" backup --source "$src"
  bytes "$work/rewind-$tree" >"$work/rewind-$tree.day2"
  measure "restic-$tree-day2" restic --repo "$work/restic-$tree" --cache-dir "$work/restic-cache" backup --host bench "$src"
  bytes "$work/restic-$tree" >"$work/restic-$tree.day2"
  python3 bench/volumes_data.py undo "$src" "$src.undo"
done

python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
def read(name):
    return open(f"{work}/{name}").read().split()
print("trees: mixed = ~2 GB (8 x 100 MB, 400 x 1-2 MB, 20,000 x 1-60 KB; half log-like text, half random);")
print("       small = 1,000,000 files of 100-2,000 bytes in 1,000 directories. Day 2: 1% of the files got 4 KiB rewritten.\n")
print(f"{'tree':6} {'tool':7} {'MB/s':>7} {'files/s':>9} {'stored MB':>10} {'day-2 MB':>9} {'day-2 s':>8} {'peak RSS MiB':>13}")
rows = {}
for tree in ("mixed", "small"):
    summary = json.loads(open(f"{work}/rewind-{tree}-day1.out").read())
    mb, files = summary["file_bytes"] / 1e6, summary["files"] + summary["directories"] + summary["symlinks"]
    for tool in ("rewind", "restic"):
        s1, rss1 = map(float, read(f"{tool}-{tree}-day1.time"))
        s2, rss2 = map(float, read(f"{tool}-{tree}-day2.time"))
        d1, d2 = int(read(f"{tool}-{tree}.day1")[0]), int(read(f"{tool}-{tree}.day2")[0])
        r = rows[(tree, tool)] = dict(mbs=mb / max(s1, 1e-3), fps=files / max(s1, 1e-3), stored=d1, inc=d2 - d1, s2=s2, rss=max(rss1, rss2) / 1024)
        print(f"{tree:6} {tool:7} {r['mbs']:7.0f} {r['fps']:9.0f} {r['stored']/1e6:10.1f} {r['inc']/1e6:9.1f} {r['s2']:8.1f} {r['rss']:13.0f}")
    changed = open(f"{work}/{tree}.changed").read().strip()
    print(f"{'':6} day 2 changed {changed}")
print()
for tree in ("mixed", "small"):
    rw, rs = rows[(tree, "rewind")], rows[(tree, "restic")]
    print(f"{tree:6} rewind/restic: throughput {rw['mbs']/rs['mbs']:.2f}x (target >= 2), stored {rw['stored']/rs['stored']:.3f} (target <= 1), "
          f"day-2 increment {rw['inc']/max(rs['inc'],1):.2f}, day-2 time {rw['s2']/rs['s2']:.2f}, peak RSS {rw['rss']/rs['rss']:.2f}")
print(f"peak RSS of rewind on the million-file tree: {rows[('small','rewind')]['rss']:.0f} MiB (target <= 256)")
PY
