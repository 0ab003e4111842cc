#!/usr/bin/env python3
"""Summarises tests/bench/block and tests/bench/tiers runs: markdown tables
of medians with the runs behind them, ratios to zram, the targets of
docs/benchmarks.md, and a PNG bar chart drawn by gnuplot.

    report.py block   RESULTS.jsonl OUT_DIR MACHINE SECONDS REGION_MIB
    report.py compare RESULTS.jsonl OUT_DIR MACHINE WORKLOAD_MIB LIMIT_MIB
"""
import json
import os
import statistics
import subprocess
import sys


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def med(rows, key):
    values = [r[key] for r in rows]
    return statistics.median(values) if values else float("nan")


def runs(rows, key, fmt):
    return ", ".join(fmt.format(r[key]) for r in rows)


def plot(out_dir, name, title, ylabel, labels, series):
    """series: [(legend, [value per label])]; draws a clustered bar chart."""
    dat = os.path.join(out_dir, name + ".dat")
    with open(dat, "w") as f:
        f.write("label " + " ".join('"%s"' % s[0] for s in series) + "\n")
        for i, label in enumerate(labels):
            f.write('"%s" ' % label + " ".join("%g" % s[1][i] for s in series) + "\n")
    png = os.path.join(out_dir, name + ".png")
    cols = " , ".join("'%s' using %d:xtic(1) title columnheader(%d)" % (dat, i + 2, i + 2)
                      for i in range(len(series)))
    script = f"""
set terminal pngcairo size 900,480 noenhanced
set output '{png}'
set title '{title}'
set ylabel '{ylabel}'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set key top left
set grid ytics
set yrange [0:*]
plot {cols}
"""
    try:
        subprocess.run(["gnuplot"], input=script, text=True, check=True)
        os.remove(dat)
        return png
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"(no plot: {e})", file=sys.stderr)
        return None


def block(rows, out_dir, machine, seconds, region):
    targets = [t for t in ["uzswap", "uzswap-ring", "zram", "loop"] if any(r["target"] == t for r in rows)]
    cases = [(rw, qd) for rw in ["randread", "randwrite"] for qd in [1, 32]]
    n = max(r["round"] for r in rows)
    print(f"fio, 4 KiB, io_uring, O_DIRECT, one job, {seconds} s per run over a {region} MiB region "
          f"written first with half-compressible data; medians of {n} rounds (the targets take turns "
          f"within each round).\n\nMachine: {machine}.\n")
    print("| case | target | IOPS | mean latency (us) | p99 latency (us) | IOPS / zram | runs (IOPS) |")
    print("|---|---|---|---|---|---|---|")
    summary = {}
    for rw, qd in cases:
        zram = [r for r in rows if r["target"] == "zram" and r["rw"] == rw and r["qd"] == qd]
        zram_iops = med(zram, "iops") if zram else None
        for t in targets:
            sel = [r for r in rows if r["target"] == t and r["rw"] == rw and r["qd"] == qd]
            if not sel:
                continue
            iops, mean, p99 = med(sel, "iops"), med(sel, "mean_us"), med(sel, "p99_us")
            summary[(t, rw, qd)] = (iops, mean, p99)
            ratio = f"{iops / zram_iops:.2f}" if zram_iops else "-"
            print(f"| {rw} QD{qd} | {t} | {iops:,.0f} | {mean:.1f} | {p99:.1f} | {ratio} | {runs(sel, 'iops', '{:,.0f}')} |")
    z = summary.get(("zram", "randread", 1))
    for name in ["uzswap", "uzswap-ring"]:
        u, u32 = summary.get((name, "randread", 1)), summary.get((name, "randread", 32))
        if not (u and z and u32):
            continue
        print(f"\nTargets ({name}):")
        print(f"- QD1 random-read mean latency <= 2x zram's: {u[1]:.1f} us vs {z[1]:.1f} us = "
              f"{u[1] / z[1]:.2f}x ({'met' if u[1] <= 2 * z[1] else 'not met'})")
        print(f"- QD32 random-read IOPS >= zram's QD1 IOPS: {u32[0]:,.0f} vs {z[0]:,.0f} "
              f"({'met' if u32[0] >= z[0] else 'not met'})")
    labels = [f"{rw} QD{qd}" for rw, qd in cases]
    png = plot(out_dir, "block", "4 KiB random I/O, median IOPS", "IOPS", labels,
               [(t, [summary.get((t, rw, qd), (0, 0, 0))[0] for rw, qd in cases]) for t in targets])
    if png:
        print(f"\nPlot: `{os.path.relpath(png)}`")


def compare(rows, out_dir, machine, mib, limit):
    workloads = [w for w in ["uniform", "skewed"] if any(r.get("workload", "uniform") == w for r in rows)]
    for workload in workloads:
        compare_one([r for r in rows if r.get("workload", "uniform") == workload], workload, out_dir,
                    machine, mib, limit, len(workloads) > 1)


def compare_one(rows, workload, out_dir, machine, mib, limit, several):
    tiers = [t for t in ["uzswap", "uzswap-ring", "uzswap-file", "zram", "zram-disk", "zswap", "disk"]
             if any(r["tier"] == t for r in rows)]
    n = max(r["round"] for r in rows)
    pages = rows[0]["pages"]
    what = ("re-touch every page in random order and check it" if workload == "uniform" else
            "touch pages at random, 90% of the touches on a hot fifth of them, checking each")
    print(f"Workload ({workload}): {mib} MiB ({pages:,} pages) of real file data in a cgroup limited to "
          f"{limit} MiB: fill, then {what}. Medians of {n} rounds; the tiers take turns within each "
          f"round.\n\nMachine: {machine}.\n")
    print("| tier | fill (s) | re-touch (s) | re-touch / zram | re-touch / disk | major faults | us per fault "
          "| loads: pool / file | pool RAM / data | pool + table RAM / data | runs (re-touch s) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    m = {}
    for t in tiers:
        sel = [r for r in rows if r["tier"] == t]
        pool = [r["pool_bytes"] / r["orig_bytes"] for r in sel if r["orig_bytes"] > 0]
        full = [(r["pool_bytes"] + r["table_bytes"]) / r["orig_bytes"] for r in sel if r["orig_bytes"] > 0]
        m[t] = (med(sel, "fill"), med(sel, "retouch"), statistics.median(pool) if pool else None,
                statistics.median(full) if full else None)
    for t in tiers:
        fill, retouch, pool, full = m[t]
        rz = f"{retouch / m['zram'][1]:.2f}" if "zram" in m else "-"
        rd = f"{retouch / m['disk'][1]:.2f}" if "disk" in m else "-"
        ps = f"{pool:.3f}" if pool else "-"
        fs = f"{full:.3f}" if full and t != "zswap" else "-"
        sel = [r for r in rows if r["tier"] == t]
        faults = med(sel, "faults") if all("faults" in r for r in sel) else 0
        per_fault = f"{retouch / faults * 1e6:.0f}" if faults else "-"
        split = "-"
        if t.startswith("uzswap") and all("loads" in r for r in sel):
            loads, file_loads = med(sel, "loads"), med(sel, "file_loads")
            split = f"{loads - file_loads:,.0f} / {file_loads:,.0f}"
        print(f"| {t} | {fill:.2f} | {retouch:.2f} | {rz} | {rd} | {faults:,.0f} | {per_fault} | {split} "
              f"| {ps} | {fs} | {runs(sel, 'retouch', '{:.2f}')} |")
    for name in ["uzswap", "uzswap-ring"]:
        if not (name in m and "zram" in m and "disk" in m):
            continue
        u, z, d = m[name], m["zram"], m["disk"]
        print(f"\nTargets ({name}):")
        print(f"- re-touch <= 1.5x zram's: {u[1] / z[1]:.2f}x ({'met' if u[1] <= 1.5 * z[1] else 'not met'})")
        print(f"- re-touch <= 0.4x plain disk swap's: {u[1] / d[1]:.2f}x ({'met' if u[1] <= 0.4 * d[1] else 'not met'})")
        if u[2] and z[2]:
            print(f"- RAM per stored byte <= zram's, pools: {u[2]:.3f} vs {z[2]:.3f} "
                  f"({'met' if u[2] <= z[2] else 'not met'}); pools and tables: {u[3]:.3f} vs {z[3]:.3f} "
                  f"({'met' if u[3] <= z[3] else 'not met'})")
    if "uzswap-file" in m and "disk" in m:
        u, d = m["uzswap-file"], m["disk"]
        bound = 0.9 if workload == "skewed" else 1.1
        print(f"\nTarget (uzswap-file, issue 15): re-touch <= {bound}x disk swap alone's: {u[1] / d[1]:.2f}x "
              f"({'met' if u[1] <= bound * d[1] else 'not met'})")
        if "zswap" in m:
            print(f"- against zswap over disk: {u[1] / m['zswap'][1]:.2f}x")
    name = "compare" if not several else f"compare-{workload}"
    png = plot(out_dir, name, f"{mib} MiB {workload} workload in {limit} MiB, median seconds", "seconds",
               tiers, [("fill", [m[t][0] for t in tiers]), ("re-touch", [m[t][1] for t in tiers])])
    if png:
        print(f"\nPlot: `{os.path.relpath(png)}`")
    print()


if __name__ == "__main__":
    kind, path, out_dir, machine, a, b = sys.argv[1:7]
    rows = load(path)
    if not rows:
        sys.exit("no results")
    (block if kind == "block" else compare)(rows, out_dir, machine, a, b)
