"""The performance round's targets next to the figures bench/all.sh wrote.

usage: targets.py OUT    (the folder holding all-1m.txt, all-10m.txt,
                           all-incremental.txt)
"""
import re, sys
out = sys.argv[1]
def blocks(name):
    found, current = {}, None
    for line in open(f"{out}/{name}"):
        line = line.rstrip("\n")
        if line.startswith("== ") and line != "== end":
            current = found.setdefault(line[3:], {})
        elif line == "== end":
            current = None
        elif current is not None and ": " in line:
            k, v = line.split(": ", 1)
            current[k] = v
    return found
num = lambda s: float(re.sub(r"[^0-9.]", "", s))
one, ten, inc = blocks("all-1m.txt"), blocks("all-10m.txt"), blocks("all-incremental.txt")
w = one["weir whole-job bench"]
print("== targets")
print(f"run_events_per_s_1m: {w['run_events_per_s']} (target >= 250,000)")
print(f"run_cpu_us_per_event_1m: {w['run_cpu_us_per_event']} (target <= 6)")
for peer, key, target in (("duckdb peer bench", "duckdb_wall_ratio", 2.5), ("python peer bench", "wall_ratio", 9)):
    if peer in one and key in one.get("comparison", {}):
        ratio = num(one[peer]["wall_s"]) / num(w["run_wall_s"])
        print(f"{key.replace('wall_ratio', 'vs_run')}_1m: {ratio:.1f}x (target >= {target}x; "
              f"with maintain {one['comparison'][key]})")
i = inc["weir incremental bench"]
print(f"incremental_cost_ratio: {i['cost_ratio']} (target <= 1.5)")
print(f"incremental_files_read: {i['large_lake_ingest_files_read']} of {i['new_files']} new (target: equal)")
for label, b in (("1m", one), ("10m", ten)):
    for stage in ("ingest", "process", "curate", "erase"):
        blk = b.get(f"weir {stage} bench")
        if blk and "peak_rss_mb" in blk:
            print(f"peak_rss_mb_{stage}_{label}: {blk['peak_rss_mb']} (target <= 1024)")
    whole = b["weir whole-job bench"]
    print(f"peak_rss_mb_run_{label}: {whole['run_peak_rss_mb']} (target <= 1024)")
    if "maintain_peak_rss_mb" in whole:
        print(f"peak_rss_mb_maintain_{label}: {whole['maintain_peak_rss_mb']} (target <= 1024)")
print(f"peak_rss_mb_run_incremental: {i['large_lake_peak_rss_mb']} (target <= 1024)")
print("== end")
