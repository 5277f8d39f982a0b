#!/usr/bin/env bash
# Proves the test bed's start-up has no race (issue 19): from a clean clone of HEAD, runs
# `make cluster-up` / `make cluster-down` ROUNDS times (default 10) and `make run` RUNS times
# (default 3) in a row, and stops non-zero at the first failure. Not part of `make test`.
# The clone shares CARGO_TARGET_DIR with this checkout when set (saves the cold compile) and the
# test-bed binary cache (~/.cache/rewind) as CI does; everything else is the clone's own.
set -euo pipefail
rounds=${ROUNDS:-10}
runs=${RUNS:-3}
source_repo=$(cd "$(dirname "$0")/.." && pwd)
clone=$(mktemp -d /tmp/rewind-startup-XXXXXX)
chmod 755 "$clone" # PostgreSQL runs as the postgres user and must reach the bed under it
trap '(cd "$clone" && make --no-print-directory cluster-down >/dev/null 2>&1); rm -rf "$clone"' EXIT
git clone --quiet "$source_repo" "$clone"
cd "$clone"
say() { printf 'startup-repeat: %s\n' "$*"; }
say "clean clone of $(git rev-parse --short HEAD) in $clone"
for round in $(seq 1 "$rounds"); do
  started=$SECONDS
  make --no-print-directory cluster-up >"$clone/up-$round.log" 2>&1 \
    || { cat "$clone/up-$round.log"; say "cluster-up failed in round $round of $rounds"; exit 1; }
  make --no-print-directory cluster-down >"$clone/down-$round.log" 2>&1 \
    || { cat "$clone/down-$round.log"; say "cluster-down failed in round $round of $rounds"; exit 1; }
  say "round $round/$rounds: cluster-up + cluster-down in $((SECONDS - started))s"
done
for run in $(seq 1 "$runs"); do
  started=$SECONDS
  make --no-print-directory run >"$clone/run-$run.log" 2>&1 \
    || { cat "$clone/run-$run.log"; say "make run failed in run $run of $runs"; exit 1; }
  make --no-print-directory cluster-down >/dev/null 2>&1 # the next run starts the bed afresh
  say "make run $run/$runs: passed in $((SECONDS - started))s"
done
say "all $rounds cluster-up/down rounds and $runs make runs passed"
