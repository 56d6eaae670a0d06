"""The report half of perf/lmcache_bench.py: what a run measures (sizes,
goals), the goals judged on a run's rows, the machine's facts, the Markdown
report and the plot.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


KIB = 1024


MIB = 1024 * 1024


GIB = 1024 * MIB


# (object KiB, keys per submit, submits in flight): one round (one batch in the
# Python comparison) is 64, 128 and 256 MiB.
SIZES = [(256, 64, 4), (4096, 8, 4), (32768, 2, 4)]


WARMUP = 1


PY_KVRING = "kvring tcp:// (Python)"
PY_MOONCAKE = "Mooncake Store tcp (Python)"


GOALS = [
    # (name, numerator, denominator, op, goal) over LMCache bench rows, or
    # over the Python comparison (the Mooncake one).
    ("kvring file: / LMCache fs, store", "kvring file:", "LMCache fs", "store", 2.0),
    ("kvring file: / LMCache fs, load", "kvring file:", "LMCache fs", "load", 2.0),
    ("kvring file: / raw_block, store", "kvring file:", "LMCache raw_block", "store", 1.2),
    ("kvring file: / raw_block, load", "kvring file:", "LMCache raw_block", "load", 1.2),
    ("kvring tcp:// / resp, store", "kvring tcp://", "LMCache resp (redis)", "store", 2.0),
    ("kvring tcp:// / resp, load", "kvring tcp://", "LMCache resp (redis)", "load", 2.0),
    ("kvring tcp:// / Mooncake Store tcp, store", PY_KVRING, PY_MOONCAKE, "store", 2.0),
    ("kvring tcp:// / Mooncake Store tcp, load", PY_KVRING, PY_MOONCAKE, "load", 2.0),
]


def log(msg: str) -> None:
    print(f"lmcache_bench: {msg}", file=sys.stderr, flush=True)


def label(size: int) -> str:
    return f"{size // MIB} MiB" if size >= MIB else f"{size // KIB} KiB"


def goals(rows: list[dict], pyrows: list[dict], bind: dict) -> list[dict]:
    def find(system, size):
        for r in rows + pyrows:
            if r["system"] == system and r["size"] == size:
                return r
        return None

    out = []
    for name, num, den, op, goal in GOALS:
        per = {}
        why = None
        for kb, _, _ in SIZES:
            a, b = find(num, kb * KIB), find(den, kb * KIB)
            if not a or not b or a["status"] != "ok" or b["status"] != "ok":
                bad = [x["system"] for x in (a, b) if not x or x["status"] != "ok"]
                why = f"no figure: {', '.join(bad)} not measured at {label(kb * KIB)}"
                per[label(kb * KIB)] = None
                continue
            per[label(kb * KIB)] = round(a[op]["mbps"] / b[op]["mbps"], 2)
        vals = [v for v in per.values() if v is not None]
        g = {"goal": name, "target": f">= {goal:g}", "per_size": per}
        g["value"] = min(vals) if vals else None
        g["met"] = why is None and bool(vals) and min(vals) >= goal
        if why:
            g["note"] = why
        out.append(g)
    ok = bind.get("status") == "ok"
    cpu = bind.get("python_cpu_us_per_key")
    out.append(
        {
            "goal": "Python CPU per key, 64 x 4 KiB gets on mem:",
            "target": "< 5 us",
            "value": cpu,
            "met": ok and cpu < 5.0,
        }
    )
    ratio = bind.get("ratio")
    out.append(
        {
            "goal": "Python loop / kvring-bench ops/s",
            "target": ">= 0.8",
            "value": ratio,
            "met": ok and ratio >= 0.8,
        }
    )
    return out


def sh(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def facts(out: Path) -> dict:
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem = int(line.split()[1]) * KIB
    fs = sh(["findmnt", "-n", "-o", "FSTYPE,SOURCE", "-T", str(out)]).split()

    def ver(pkg):
        try:
            return importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            return None

    head = sh(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = bool(sh(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"]))
    return {
        "kernel": f"{platform.system()} {platform.release()} {platform.machine()}",
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem / GIB, 1),
        "dir": str(out),
        "file_system": fs[0] if fs else "",
        "device": fs[1] if len(fs) > 1 else "",
        "python": platform.python_version(),
        "kvring": ver("kvring"),
        "lmcache": ver("lmcache"),
        "torch": ver("torch"),
        "mooncake": ver("mooncake-transfer-engine-non-cuda"),
        "redis_server": sh(["redis-server", "--version"]),
        "git": head + (" (with uncommitted changes)" if dirty else ""),
    }


def fmt(v, nd=0) -> str:
    return "-" if v is None else f"{v:,.{nd}f}"


def cell(r: dict, op: str) -> tuple[str, str]:
    if r["status"] != "ok":
        return r["status"], "-"
    m = r[op]
    return fmt(m["mbps"]), f"{fmt(m['p50_ms'], 1)} / {fmt(m['p99_ms'], 1)}"


def yes(g: dict) -> str:
    return "met" if g["met"] else "**not met**"


def markdown(rep: dict) -> str:
    f = rep["facts"]
    lines = [
        "# kvring and LMCache: L2 adapter benchmark",
        "",
        f"`bash perf/lmcache_bench.sh{' --quick' if rep['mode'] == 'quick' else ''}`:"
        f" {rep['mode']} run, {rep['seconds']:.0f} s in all, {rep['date']}. Every figure"
        " comes from this one run. MB/s = 2^20 bytes/s, the mean over measured rounds of"
        " round bytes / round time (LMCache's `throughput_avg_mbps`); p50 / p99 are per"
        " round (one round = one batch), in ms.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        f"| kernel | {f['kernel']} |",
        f"| CPU | {f['cpu']} |",
        f"| cores | {f['cores']} |",
        f"| memory | {f['memory_gib']} GiB |",
        f"| load average (1, 5, 15 min) before / after | {f['loadavg_before']} /"
        f" {f['loadavg_after']} |",
        f"| file system (file:, fs, raw_block) | {f['file_system']} on {f['device']} |",
        f"| Python / torch | {f['python']} / {f['torch']} (CPU) |",
        f"| kvring / LMCache | {f['kvring']} / {f['lmcache']} |",
        f"| Mooncake | mooncake-transfer-engine-non-cuda {f['mooncake']} |",
        f"| redis-server | {f['redis_server']} |",
        f"| tree | {f['git']} |",
        "",
        "## `lmcache bench l2`",
        "",
        "The same arguments for every system at a size: `--num-keys K --in-flight 4"
        f" --data-size-kb S --rounds R --warmup-rounds {WARMUP} --l1-align-bytes 4096"
        " --lookup-max-hit-rate 0.5 --no-skip-verify` (K, R in the table), each on an"
        " empty store (a new"
        " file, directory or server); a row is ok only when the bench's round-trip"
        " check passed and every store and load key succeeded.",
        "",
        "| object | keys x in flight | rounds | system | store MB/s | store p50 / p99 ms"
        " | load MB/s | load p50 / p99 ms |",
        "|---|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in rep["lmcache_bench"]:
        s, sp = cell(r, "store")
        ld, lp = cell(r, "load")
        lines.append(
            f"| {label(r['size'])} | {r['num_keys']} x {r['in_flight']} | {r['rounds']}"
            f" | {r['system']}"
            f" | {s} | {sp} | {ld} | {lp} |"
        )
    notes = sorted({(r["system"], r["error"]) for r in rep["lmcache_bench"] if r["error"]})
    if notes:
        lines += [""] + [f"- {s}: {e}" for s, e in notes]
    lines += [
        "",
        "Adapters: kvring as `native_plugin` `kvring.lmcache.KvringConnector` with `mem:`,"
        " `file:` (capacity set, on the file system above) and `tcp://` (a kvring-server"
        " on loopback); `fs` and `raw_block` (O_DIRECT, io_uring, a pre-sized file) in"
        " the same directory as kvring's file; `resp` with 8 workers against a private"
        " redis-server without persistence on loopback. LMCache's `fs` adapter writes"
        " through the page cache and its loads are served from it; kvring's `file:`"
        " (O_DIRECT) and `raw_block` go to the device. The dirty pages a row leaves are"
        " written back (sync) before the next row starts.",
        "",
        "## kvring-server vs Mooncake Store, from Python",
        "",
        "Loopback TCP, a separate process holding the memory for each (kvring-server;"
        " mooncake_master plus a process that mounts the global segment, the client"
        " mounting none). One batch = one LMCache round's keys, from one registered"
        f" pool, R measured batches (as the rounds above) after {WARMUP} warmup, fresh keys"
        " per batch, fresh servers per size,"
        " each batch timed alone (`Target.put/get(...).wait()`,"
        " `batch_put_from/batch_get_into`); every get checked byte for byte.",
        "",
        "| object | batch | rounds | system | store MB/s | store p50 / p99 ms | load MB/s"
        " | load p50 / p99 ms |",
        "|---|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in rep["python_compare"]:
        s, sp = cell(r, "store")
        ld, lp = cell(r, "load")
        lines.append(
            f"| {label(r['size'])} | {r['batch_keys']} | {r['rounds']} | {r['system']}"
            f" | {s} | {sp} | {ld} | {lp} |"
        )
    notes = sorted({(r["system"], r["error"]) for r in rep["python_compare"] if r.get("error")})
    if notes:
        lines += [""] + [f"- {s}: {e}" for s, e in notes]
    b = rep["binding"]
    lines += [
        "",
        "## Binding overhead",
        "",
        f"64 x 4 KiB gets on `mem:64M` (512 keys, cycled), {b['seconds']:g} s each, run"
        " twice alternately, best of each: a Python loop over `kvring.Engine`"
        " (`Target.get(keys, bufs).wait()`, lists built before the loop; CPU ="
        " `time.process_time()` of the process over the loop / keys) against"
        " `kvring-bench --target mem:64M --op get --size 4K --batch 64 --depth 1`.",
        "",
    ]
    if b["status"] == "ok":
        lines += [
            "| | ops/s | CPU us / key |",
            "|---|---:|---:|",
            f"| Python loop | {fmt(b['python_ops_per_s'])} | {b['python_cpu_us_per_key']} |",
            f"| kvring-bench | {fmt(b['kvring_bench_ops_per_s'])} | - |",
            f"| ratio | {b['ratio']} | |",
        ]
    else:
        lines.append(f"failed: {b['error']}")
    lines += [
        "",
        "## Goals",
        "",
        "Ratios of MB/s from the tables above, per object size; a goal is met when it"
        " holds at every size.",
        "",
        "| goal | target | " + " | ".join(label(kb * KIB) for kb, _, _ in SIZES) + " | met |",
        "|---|---|" + "---:|" * len(SIZES) + "---|",
    ]
    for g in rep["goals"]:
        if "per_size" in g:
            vals = " | ".join(fmt(v, 2) for v in g["per_size"].values())
            lines.append(f"| {g['goal']} | {g['target']} | {vals} | {yes(g)} |")
    lines += ["", "| goal | target | value | met |", "|---|---|---:|---|"]
    for g in rep["goals"]:
        if "per_size" not in g:
            v = fmt(g["value"], 3 if "CPU" in g["goal"] else 2)
            lines.append(f"| {g['goal']} | {g['target']} | {v} | {yes(g)} |")
    lines += ["", "![MB/s per object size](lmcache.png)", ""]
    return "\n".join(lines)


def plot(rep: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rep["lmcache_bench"] + rep["python_compare"]]
    systems, missing = [], []
    for r in rows:
        if r["status"] == "ok" and r["system"] not in systems:
            systems.append(r["system"])
    for r in rows:
        why = f"{r['system']} ({r['status']})"
        if r["system"] not in systems and why not in missing:
            missing.append(why)
    sizes = [kb * KIB for kb, _, _ in SIZES]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2), sharey=True)
    width = 0.8 / len(systems)
    cmap = plt.get_cmap("tab10")
    for ax, op in zip(axes, ("store", "load"), strict=True):
        for j, system in enumerate(systems):
            xs, ys = [], []
            for i, size in enumerate(sizes):
                for r in rows:
                    if r["system"] == system and r["size"] == size and r["status"] == "ok":
                        xs.append(i - 0.4 + (j + 0.5) * width)
                        ys.append(r[op]["mbps"])
            ax.bar(
                xs,
                ys,
                width,
                color=cmap(j % 10),
                hatch="//" if "(Python)" in system else None,
                label=system,
            )
        ax.set_xticks(range(len(sizes)))
        ax.set_xticklabels([label(s) for s in sizes])
        ax.set_yscale("log")
        ax.set_title(f"{op.capitalize()}")
        ax.grid(axis="y", which="both", alpha=0.3)
    axes[0].set_ylabel("MB/s (2^20 B/s), log scale")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        loc="lower center",
        bbox_to_anchor=(0.5, 0.04),
        ncol=3,
        fontsize=8,
        frameon=False,
    )
    fig.suptitle(
        f"lmcache bench l2 and Python clients, {rep['mode']} run, {rep['facts']['cores']} cores"
    )
    if missing:
        fig.text(0.5, 0.01, "no figure: " + ", ".join(missing), ha="center", fontsize=8)
    fig.tight_layout(rect=(0, 0.17, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
