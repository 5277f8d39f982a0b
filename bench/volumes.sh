#!/usr/bin/env bash
# `make bench-volumes`: `rewind volume backup` beside restic 0.18.1 `backup` on the same two file
# trees, same disk: a ~2 GB tree of mixed files and a tree of 1,000,000 small files, then day 2
# after 1% of the files changed. Both under the same conditions: the same number of reader
# threads (rewind --readers, restic --read-concurrency: $BENCH_READERS, 4 by default), restic
# without its scan pass (--no-scan), both making their data durable before the snapshot (restic
# fsyncs its packs; Rewind's file:// backend syncs the file system before the manifest), the
# order alternating between runs, $BENCH_RUNS runs (2 by default) of which the best time and
# the highest peak RSS are reported. Prints a table with ratios (compare ratios, not seconds).
# Needs no cluster.
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
readers=${BENCH_READERS:-4}
runs=${BENCH_RUNS:-2}

# measure NAME COMMAND...: runs COMMAND, records wall seconds and peak RSS (KiB) in $work/NAME.
measure() {
  local name=$1; shift
  sync
  /usr/bin/time -f "%e %M" -o "$work/$name.time" "$@" >"$work/$name.out" 2>"$work/$name.err" || { cat "$work/$name.err" >&2; exit 1; }
}
bytes() { du -sb "$1" | cut -f1; }
# Both tools read the tree from the page cache: read it once before the first run.
warm() { find "$1" -type f -print0 | xargs -0 -P2 -n 1000 cat >/dev/null; }

# One tool's day 1 and day 2 on a tree, into a fresh repository: run-NAME files in $work.
rewind_days() { # TREE RUN
  local src=$cache/tree-$1 repo=$work/rewind-$1-$2
  "$rewind" repo --repo "file://$repo" init >/dev/null
  # --live: the bench trees are plain directories, not read-only snapshot mounts.
  measure "rewind-$1-day1-$2" "$rewind" volume --repo "file://$repo" backup --live --readers "$readers" --source "$src"
  bytes "$repo" >"$work/rewind-$1.day1-$2"
}
restic_days() { # TREE RUN
  local src=$cache/tree-$1 repo=$work/restic-$1-$2
  restic init --repo "$repo" >/dev/null 2>&1
  measure "restic-$1-day1-$2" restic --repo "$repo" --cache-dir "$work/restic-cache-$2" backup --no-scan --read-concurrency "$readers" --host bench "$src"
  bytes "$repo" >"$work/restic-$1.day1-$2"
}
day2() { # TOOL TREE RUN
  local src=$cache/tree-$2
  if [[ $1 == rewind ]]; then
    measure "rewind-$2-day2-$3" "$rewind" volume --repo "file://$work/rewind-$2-$3" backup --live --readers "$readers" --source "$src"
  else
    measure "restic-$2-day2-$3" restic --repo "$work/restic-$2-$3" --cache-dir "$work/restic-cache-$3" backup --no-scan --read-concurrency "$readers" --host bench "$src"
  fi
  bytes "$work/$1-$2-$3" >"$work/$1-$2.day2-$3"
}

for tree in mixed small; do
  src=$cache/tree-$tree
  for run in $(seq 1 "$runs"); do
    # Odd runs: Rewind first; even runs: restic first.
    if (( run % 2 )); then order=(rewind restic); else order=(restic rewind); fi
    echo "bench: $tree tree, run $run of $runs (${order[*]})" >&2
    warm "$src"
    for tool in "${order[@]}"; do "${tool}_days" "$tree" "$run"; done
    python3 bench/volumes_data.py change "$src" "$src.undo" >"$work/$tree.changed"
    warm "$src"
    for tool in "${order[@]}"; do day2 "$tool" "$tree" "$run"; done
    python3 bench/volumes_data.py undo "$src" "$src.undo"
    # Each run's repositories go once measured (the million-file tree's are ~1 GB each).
    rm -rf "$work"/rewind-$tree-$run "$work"/restic-$tree-$run "$work"/restic-cache-$run
  done
done

python3 - "$work" "$runs" "$readers" <<'PY'
import json, sys
work, runs, readers = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def read(name):
    return open(f"{work}/{name}").read().split()
print("trees: mixed = ~2 GB (8 x 100 MB, 400 x 1-2 MB, 20,000 x 1-60 KB; half log-like text, half random);")
print("       small = 1,000,000 files of 100-2,000 bytes in 1,000 directories. Day 2: 1% of the files got 4 KiB rewritten.")
print(f"{readers} reader threads each, restic --no-scan; best of {runs} runs (order alternating), peak RSS the highest.\n")
print(f"{'tree':6} {'tool':7} {'MB/s':>7} {'files/s':>9} {'stored MB':>10} {'day-2 MB':>9} {'day-2 s':>8} {'peak RSS MiB':>13}  day-1 s per run")
rows = {}
for tree in ("mixed", "small"):
    summary = json.loads(open(f"{work}/rewind-{tree}-day1-1.out").read())
    mb, files = summary["file_bytes"] / 1e6, summary["files"] + summary["directories"] + summary["symlinks"]
    for tool in ("rewind", "restic"):
        day1 = [tuple(map(float, read(f"{tool}-{tree}-day1-{r}.time"))) for r in range(1, runs + 1)]
        day2 = [tuple(map(float, read(f"{tool}-{tree}-day2-{r}.time"))) for r in range(1, runs + 1)]
        d1 = [int(read(f"{tool}-{tree}.day1-{r}")[0]) for r in range(1, runs + 1)]
        d2 = [int(read(f"{tool}-{tree}.day2-{r}")[0]) for r in range(1, runs + 1)]
        s1, s2 = min(t for t, _ in day1), min(t for t, _ in day2)
        rss = max(m for _, m in day1 + day2) / 1024
        r = rows[(tree, tool)] = dict(mbs=mb / max(s1, 1e-3), fps=files / max(s1, 1e-3), stored=min(d1),
                                      inc=min(b - a for a, b in zip(d1, d2)), s2=s2, rss=rss)
        per_run = " ".join(f"{t:.1f}" for t, _ in day1)
        print(f"{tree:6} {tool:7} {r['mbs']:7.0f} {r['fps']:9.0f} {r['stored']/1e6:10.1f} {r['inc']/1e6:9.1f} {r['s2']:8.1f} {r['rss']:13.0f}  {per_run}")
    changed = open(f"{work}/{tree}.changed").read().strip()
    print(f"{'':6} day 2 changed {changed}")
print()
for tree in ("mixed", "small"):
    rw, rs = rows[(tree, "rewind")], rows[(tree, "restic")]
    print(f"{tree:6} rewind/restic: throughput {rw['mbs']/rs['mbs']:.2f}x (target >= 2), stored {rw['stored']/rs['stored']:.3f} (target <= 1), "
          f"day-2 increment {rw['inc']/max(rs['inc'],1):.2f}, day-2 time {rw['s2']/rs['s2']:.2f}, peak RSS {rw['rss']/rs['rss']:.2f}")
print(f"peak RSS of rewind on the million-file tree: {rows[('small','rewind')]['rss']:.0f} MiB (target <= 256)")
PY
