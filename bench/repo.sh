#!/usr/bin/env bash
# `make bench-repo`: rewind's repository beside restic and borg on the same pg_dump data,
# same disk, one run; prints a side-by-side table with ratios (compare ratios, not seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
cache=${REWIND_CACHE:-$HOME/.cache/rewind}/bench
mkdir -p "$cache"

# The peers, installed here: restic 0.18.1 built with go install (bench/restic.sh), borg and GNU
# time from Debian when missing.
source bench/restic.sh
missing=()
command -v borg >/dev/null || missing+=(borgbackup)
[[ -x /usr/bin/time ]] || missing+=(time)
if ((${#missing[@]})); then
  [[ $(id -u) == 0 ]] || { echo "bench: missing ${missing[*]}: sudo apt-get install ${missing[*]}" >&2; exit 1; }
  echo "bench: installing ${missing[*]} from Debian" >&2
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
restic version | grep -q " $RESTIC_VERSION " || { echo "bench: restic on PATH is not $RESTIC_VERSION: $(restic version)" >&2; exit 1; }

tests/cluster/up.sh >/dev/null 2>&1 || { echo "bench: the test bed (for PostgreSQL) did not come up: make cluster-up" >&2; exit 1; }
set -a; source .testbed/env; set +a
export PATH=$PG_BIN:$PATH

# 1. Data: a plain pg_dump of pgbench scale 40 with random md5 filler, then day 2 after 1% of rows changed.
if [[ ! -s $cache/day2.sql ]]; then
  echo "bench: generating the pgbench data set (once; cached in $cache)" >&2
  dropdb --if-exists bench >/dev/null 2>&1 || true
  createdb bench
  pgbench -q -i -s 40 bench >/dev/null 2>&1
  psql -q -d bench -c "UPDATE pgbench_accounts SET filler = md5(random()::text) || md5(random()::text) || substr(md5(random()::text), 1, 20)" >/dev/null
  pg_dump -d bench -f "$cache/day1.sql.tmp" && mv "$cache/day1.sql.tmp" "$cache/day1.sql"
  psql -q -d bench -c "UPDATE pgbench_accounts SET abalance = abalance + 1, filler = md5(random()::text) || md5(random()::text) || substr(md5(random()::text), 1, 20) WHERE random() < 0.01" >/dev/null
  pg_dump -d bench -f "$cache/day2.sql.tmp" && mv "$cache/day2.sql.tmp" "$cache/day2.sql"
  dropdb bench
fi
day1=$cache/day1.sql
day2=$cache/day2.sql
size1=$(stat -c %s "$day1")

cargo build --release --locked --quiet
rewind=${CARGO_TARGET_DIR:-target}/release/rewind
work=$(mktemp -d "${TMPDIR:-/var/tmp}/rewind-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
export REWIND_REPO_KEY=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
export RESTIC_PASSWORD=bench-password BORG_PASSPHRASE=bench-password BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes

# measure NAME COMMAND...: runs COMMAND, records wall seconds and peak RSS (KiB) in $work/NAME.
measure() {
  local name=$1; shift
  sync
  /usr/bin/time -f "%e %M" -o "$work/$name.time" "$@" >/dev/null 2>"$work/$name.err" || { cat "$work/$name.err" >&2; exit 1; }
}
seconds() { cut -d' ' -f1 "$work/$1.time"; }
rss() { cut -d' ' -f2 "$work/$1.time"; }
bytes() { du -sb "$1" | cut -f1; }

# rewind
"$rewind" repo --repo "file://$work/rewind" init >/dev/null
measure rewind-day1 sh -c "'$rewind' repo --repo 'file://$work/rewind' put --name dump.sql < '$day1'"
rewind_day1=$(bytes "$work/rewind")
measure rewind-day2 sh -c "'$rewind' repo --repo 'file://$work/rewind' put --name dump.sql < '$day2'"
rewind_day2=$(bytes "$work/rewind")
first=$("$rewind" repo --repo "file://$work/rewind" ls | head -1 | cut -d' ' -f1)
measure rewind-restore "$rewind" repo --repo "file://$work/rewind" cat "$first" dump.sql

# restic (repository format 2: compressed, auto)
restic init --repo "$work/restic" >/dev/null 2>&1
measure restic-day1 sh -c "restic --repo '$work/restic' backup --stdin --stdin-filename dump.sql < '$day1'"
restic_day1=$(bytes "$work/restic")
measure restic-day2 sh -c "restic --repo '$work/restic' backup --stdin --stdin-filename dump.sql < '$day2'"
restic_day2=$(bytes "$work/restic")
restic_first=$(restic --repo "$work/restic" snapshots --json | python3 -c 'import json,sys; print(sorted(json.load(sys.stdin), key=lambda s: s["time"])[0]["short_id"])')
measure restic-restore restic --repo "$work/restic" dump "$restic_first" dump.sql

# borg (repokey-blake2, its default lz4 compression)
borg init --encryption=repokey-blake2 "$work/borg" >/dev/null 2>&1
measure borg-day1 sh -c "borg create '$work/borg::day1' - < '$day1'"
borg_day1=$(bytes "$work/borg")
measure borg-day2 sh -c "borg create '$work/borg::day2' - < '$day2'"
borg_day2=$(bytes "$work/borg")
measure borg-restore borg extract --stdout "$work/borg::day1"

python3 - "$size1" "$work" <<PY
import sys
size = int(sys.argv[1]); mb = size / 1e6
def t(name):
    secs, rss = open(f"{sys.argv[2]}/{name}.time").read().split()
    return float(secs), int(rss) / 1024
rows = {}
for tool, d1, d2 in [("rewind", $rewind_day1, $rewind_day2), ("restic", $restic_day1, $restic_day2), ("borg", $borg_day1, $borg_day2)]:
    i_s, i_rss = t(f"{tool}-day1"); _, d_rss = t(f"{tool}-day2"); r_s, r_rss = t(f"{tool}-restore")
    rows[tool] = dict(ingest=mb / max(i_s, 1e-3), stored=d1, increment=d2 - d1, restore=mb / max(r_s, 1e-3), rss=max(i_rss, d_rss, r_rss))
print(f"data: day-1 dump {mb:.0f} MB (pgbench scale 40, random md5 filler), day 2 after 1% of rows changed\n")
print(f"{'tool':8} {'ingest MB/s':>12} {'stored MB':>10} {'day-2 MB':>9} {'restore MB/s':>13} {'peak RSS MiB':>13}")
for tool, r in rows.items():
    print(f"{tool:8} {r['ingest']:12.0f} {r['stored']/1e6:10.1f} {r['increment']/1e6:9.1f} {r['restore']:13.0f} {r['rss']:13.0f}")
rw, rs, bg = rows["rewind"], rows["restic"], rows["borg"]
print()
print(f"ingest  rewind/restic {rw['ingest']/rs['ingest']:.2f}x (target >= 3)   rewind/borg {rw['ingest']/bg['ingest']:.2f}x")
print(f"stored  rewind/min(restic,borg) {rw['stored']/min(rs['stored'], bg['stored']):.2f} (target <= 1)")
print(f"day 2   rewind/borg {rw['increment']/max(bg['increment'],1):.2f} (target <= 1)")
print(f"restore rewind/restic {rw['restore']/rs['restore']:.2f}x (target >= 3)")
print(f"peak RSS rewind {rw['rss']:.0f} MiB (target <= 128)")
PY
