#!/usr/bin/env python3
"""The table of `make bench-peer` (bench/peer.sh).

  report.py WORK OBJECTS REWIND_VERSION CORES        print the run's Markdown block
  report.py --append DOC BLOCK                      add BLOCK at the end of DOC's
                                                    "## Beside Velero" section
"""
import datetime
import json
import re
import sys

SECTION = "## Beside Velero (`make bench-peer`)"


def load(work, name):
    result = json.load(open(f"{work}/{name}.json"))
    before = [float(x) for x in open(f"{work}/{name}.cpu-before").read().split()]
    after = [float(x) for x in open(f"{work}/{name}.cpu-after").read().split()]
    result["cpu"] = after[0] - before[0]
    result["apiserver_cpu"] = after[1] - before[1]
    return result


def report(work, objects, rewind_version, cores):
    vb, vr = load(work, "velero-backup"), load(work, "velero-restore")
    rb, rr = load(work, "rewind-backup"), load(work, "rewind-restore")
    vmem = json.load(open(f"{work}/velero-memory.json"))
    rmem = json.load(open(f"{work}/rewind-memory.json"))
    source, velero_count, rewind_count = open(f"{work}/counts").read().split()

    tools = {
        "velero": dict(
            backup_items=vb["status"].get("progress", {}).get("itemsBackedUp", 0),
            restore_items=vr["status"].get("progress", {}).get("itemsRestored", 0),
            backup=vb, restore=vr, rss=vmem["root_hwm_mib"], tree=vmem["tree_rss_mib"],
            phases=f"{vb['status']['phase']} / {vr['status']['phase']}",
            notes=f"restore warnings {vr['status'].get('warnings', 0)}, errors {vr['status'].get('errors', 0)}",
            restored=velero_count,
        ),
        "rewind": dict(
            backup_items=sum(p.get("resources", 0) for p in rb["status"].get("projects", [])),
            restore_items=(rr["status"].get("restored") or {}).get("resources", 0),
            backup=rb, restore=rr, rss=rmem["root_hwm_mib"], tree=rmem["tree_rss_mib"],
            phases=f"{rb['status']['phase']} / {rr['status']['phase']}",
            notes="",
            restored=rewind_count,
        ),
    }
    for t in tools.values():
        t["backup_rate"] = t["backup_items"] / t["backup"]["seconds"]
        t["restore_rate"] = t["restore_items"] / t["restore"]["seconds"]
        t["cpu"] = t["backup"]["cpu"] + t["restore"]["cpu"]
        t["api_cpu"] = t["backup"]["apiserver_cpu"] + t["restore"]["apiserver_cpu"]
    v, r = tools["velero"], tools["rewind"]
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"Run of {when}: {int(objects):,} objects ({int(source):,} ConfigMaps + Secrets in the namespace, "
        f"with kube-root-ca.crt), velero v1.18.3 + velero-plugin-for-aws v1.14.3 beside rewind {rewind_version}, "
        f"{cores} cores:",
        "",
        "| tool | backup objects/s | restore objects/s | peak RSS MiB | CPU s (backup + restore) | kube-apiserver CPU s |",
        "|---|---|---|---|---|---|",
    ]
    for name, t in (("Velero 1.18.3 (defaults)", v), (f"Rewind {rewind_version}", r)):
        rss = f"{t['rss']:.0f}" + (f" ({t['tree']:.0f} with plugins)" if name.startswith("Velero") else "")
        lines.append(
            f"| {name} | {t['backup_rate']:,.0f} ({t['backup_items']:,} in {t['backup']['seconds']:.1f} s) "
            f"| {t['restore_rate']:,.0f} ({t['restore_items']:,} in {t['restore']['seconds']:.1f} s) "
            f"| {rss} | {t['cpu']:.1f} ({t['backup']['cpu']:.1f} + {t['restore']['cpu']:.1f}) "
            f"| {t['api_cpu']:.1f} ({t['backup']['apiserver_cpu']:.1f} + {t['restore']['apiserver_cpu']:.1f}) |"
        )
    lines.append(
        f"| **Rewind/Velero** | **{r['backup_rate'] / v['backup_rate']:.1f}×** "
        f"| **{r['restore_rate'] / v['restore_rate']:.1f}×** "
        f"| **{r['rss'] / v['rss']:.2f}** ({r['rss'] / v['tree']:.2f} of Velero with plugins) "
        f"| **{r['cpu'] / v['cpu']:.3f}** | {r['api_cpu'] / v['api_cpu']:.2f} |"
    )
    lines += [
        "",
        f"Phases: Velero {v['phases']} ({v['notes']}), Rewind {r['phases']}. ConfigMaps + Secrets in the "
        f"restored namespaces: Velero {int(velero_count):,}, Rewind {int(rewind_count):,} (the source has "
        f"{int(source):,}; a new namespace brings its own kube-root-ca.crt).",
        "",
    ]
    return "\n".join(lines)


def append(doc, block_file):
    text = open(doc).read()
    block = open(block_file).read().strip() + "\n"
    start = text.index(SECTION)
    following = re.search(r"^## ", text[start + len(SECTION):], re.M)
    end = start + len(SECTION) + following.start() if following else len(text)
    head, tail = text[:end].rstrip("\n") + "\n\n", text[end:]
    open(doc, "w").write(head + block + ("\n" + tail if tail else ""))


if __name__ == "__main__":
    if sys.argv[1] == "--append":
        append(sys.argv[2], sys.argv[3])
    else:
        print(report(*sys.argv[1:5]))
