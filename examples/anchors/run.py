"""Runs W6 on this project's pipeline and on the field's anchors side by side, and prints a table.

Each configuration runs as its own process, ROUNDS times, interleaved (A B C ... A B C ...), so
that the noise of a shared machine falls on all of them alike; the table gives medians.
Measured per run, from outside the process:
  - peak RSS and peak PSS of the whole process tree (the process and every descendant, e.g.
    DataLoader's and Grain's workers), sampled from /proc every 10 ms; RSS counts pages shared
    between a parent and its forked workers once per process, PSS splits them;
  - CPU seconds of the whole process tree for the whole run (os.wait4's rusage, which includes
    the waited-for workers), start-up and imports included.
Reported by the process itself: images/s over its timing window and, for the Python loaders,
the CPU seconds inside that window (common.py). The Rust driver's window is the same (before
build to after stop, see examples/bench.rs).

    python examples/anchors/run.py --data-dir bench-data/jpeg --rounds 3 \
        --ours target/release/examples/bench [--ours-turbo /path/to/bench-built-with-turbojpeg]

PYTHON (default: this interpreter) must have torch, pillow, numpy and grain installed (and
torchvision). Every configuration does the same transform: `--transform eval` (the default,
ours W6.c2) or `--transform rrc` (ours W6.rrc.c2).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def _children(pid: int) -> list[int]:
    # A child belongs to the thread that forked it: read every thread's list.
    out = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(_children(p))
    return out


def _mem_kib(pid: int) -> tuple[int, int]:
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def measure(cmd: list[str]) -> dict:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    peak = {"rss": 0, "pss": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            rss = pss = 0
            for p in _tree(proc.pid):
                r, s = _mem_kib(p)
                rss, pss = rss + r, pss + s
            peak["rss"], peak["pss"] = max(peak["rss"], rss), max(peak["pss"], pss)
            done.wait(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    done.set()
    sampler.join()
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} exited with {proc.returncode}")
    line = [l for l in stdout.splitlines() if l.startswith("{")][-1]
    res = json.loads(line)
    n = res.get("n_items") or res.get("n_out")
    return {
        "items_per_sec": res["items_per_sec"],
        "cpu_window": res.get("cpu_s_per_item") if "loader" in res else None,
        "cpu_whole": (usage.ru_utime + usage.ru_stime) / n,
        "rss_mib": peak["rss"] / 1024,
        "pss_mib": peak["pss"] / 1024,
        "pixel_sum": res.get("pixel_sum"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="bench-data/jpeg")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ours", default="target/release/examples/bench")
    ap.add_argument("--ours-turbo", default=None, help="the driver built with --features turbojpeg")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--transform", choices=["eval", "rrc"], default="eval",
                    help="eval: Resize(256) + CenterCrop(224) everywhere (ours: W6.c2); "
                    "rrc: RandomResizedCrop 224 + flip (ours: W6.rrc.c2)")
    args = ap.parse_args()
    d = ["--data-dir", args.data_dir]
    py = args.python
    ours = "W6.rrc.c2" if args.transform == "rrc" else "W6.c2"
    configs = [(f"ours {ours} (default decoder)", [args.ours, "--id", ours, *d])]
    if args.ours_turbo:
        configs.append((f"ours {ours} (turbojpeg)", [args.ours_turbo, "--id", ours, *d]))
    d += ["--transform", args.transform]
    configs += [
        ("torch DataLoader, batch_size=None", [py, f"{HERE}/w6_torch_dataloader.py", *d]),
        ("torch DataLoader, batch_size=32", [py, f"{HERE}/w6_torch_dataloader.py", "--batch-size", "32", *d]),
        ("grain DataLoader", [py, f"{HERE}/w6_grain.py", *d]),
        ("grain MapDataset + mp_prefetch", [py, f"{HERE}/w6_grain.py", "--api", "dataset", *d]),
    ]
    runs: dict[str, list[dict]] = {name: [] for name, _ in configs}
    for r in range(args.rounds):
        for name, cmd in configs:
            m = measure(cmd)
            runs[name].append(m)
            print(f"round {r + 1} {name}: {json.dumps(m)}", file=sys.stderr, flush=True)

    def med(name: str, key: str):
        vals = [m[key] for m in runs[name] if m[key] is not None]
        return statistics.median(vals) if vals else None

    print(f"| loader (2 workers/threads, {args.rounds} rounds, medians) | images/s | peak RSS, tree (MiB) "
          "| peak PSS, tree (MiB) | CPU ms/image, window | CPU ms/image, whole process |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, _ in configs:
        win = med(name, "cpu_window")
        print(f"| {name} | {med(name, 'items_per_sec'):.0f} | {med(name, 'rss_mib'):.0f} | {med(name, 'pss_mib'):.0f} "
              f"| {'-' if win is None else f'{win * 1e3:.2f}'} | {med(name, 'cpu_whole') * 1e3:.2f} |")


if __name__ == "__main__":
    main()
