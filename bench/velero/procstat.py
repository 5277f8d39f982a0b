#!/usr/bin/env python3
"""CPU and memory of a process and its descendants, from /proc (for `bench/peer.sh`).

  procstat.py watch PID OUT.json   every 0.2 s until PID exits: write to OUT.json the root's
                                   peak RSS (VmHWM) and the largest sum of VmRSS over the root
                                   and its live descendants seen (Velero runs its plugins as
                                   child processes: the AWS plugin and `velero run-plugins`)
  procstat.py cpu PID              CPU seconds (user+system) so far of PID and its descendants,
                                   reaped children included (cutime+cstime)

The CPU figure of a window is the difference of two `cpu` readings: a plugin process that ran
and was reaped between them is counted in its parent's cutime/cstime.
"""
import json
import os
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")


def stat(pid):
    text = open(f"/proc/{pid}/stat").read()
    fields = text[text.rindex(")") + 2:].split()
    # fields[0] is field 3 (state): ppid is field 4, utime..cstime fields 14..17.
    return int(fields[1]), sum(int(f) for f in fields[11:15])


def children():
    tree = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid, _ = stat(entry)
            except (OSError, ValueError, IndexError):
                continue
            tree.setdefault(ppid, []).append(int(entry))
    return tree


def descendants(pid):
    tree, out, todo = children(), [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(tree.get(p, []))
    return out


def status_kib(pid, field):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith(field):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu(pid):
    total = 0
    for p in descendants(pid):
        try:
            total += stat(p)[1]
        except (OSError, ValueError, IndexError):
            pass
    return total / TICK


def watch(pid, out):
    peak_tree = peak_root = 0
    while os.path.exists(f"/proc/{pid}"):
        tree = sum(status_kib(p, "VmRSS:") for p in descendants(pid))
        root = status_kib(pid, "VmHWM:")
        if tree > peak_tree or root > peak_root:
            peak_tree, peak_root = max(tree, peak_tree), max(root, peak_root)
            with open(out + ".tmp", "w") as f:
                json.dump({"root_hwm_mib": peak_root / 1024, "tree_rss_mib": peak_tree / 1024}, f)
            os.replace(out + ".tmp", out)
        time.sleep(0.2)


def main():
    if sys.argv[1] == "watch":
        watch(int(sys.argv[2]), sys.argv[3])
    elif sys.argv[1] == "cpu":
        print(f"{cpu(int(sys.argv[2])):.2f}")
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
