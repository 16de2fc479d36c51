"""What every benchmark shares: the machine record, package versions, result files, and
timing of several candidates interleaved in one run.

The machines these run on are shared, so an absolute time from one run says little about
another. Every comparison here is made inside one run, the candidates timed in turn
(A B, then B A, ...), and reported as a ratio beside the raw times.
"""
from __future__ import annotations

import datetime
import os
import platform
import shlex
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")
WORK = os.path.join(HERE, "work")   # exports, checkpoints, scratch (gitignored)

if REPO not in sys.path:
    sys.path.insert(0, REPO)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", "r", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpus() -> List[str]:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return [l.strip() for l in out.stdout.splitlines() if l.strip()] if out.returncode == 0 else []
    except (OSError, subprocess.SubprocessError):
        return []


def machine() -> Dict[str, Any]:
    """CPU model, cores, memory, GPUs and the load when the run started (the machine is shared:
    a high load says the absolute times are pessimistic; the ratios are what to read)."""
    mem_gb = None
    try:
        with open("/proc/meminfo", "r", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_gb = round(int(line.split()[1]) / 2 ** 20, 1)
    except OSError:
        pass
    return {"cpu": cpu_model(), "cores": os.cpu_count(),
            "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "memory_gb": mem_gb, "gpus": gpus(), "os": platform.platform(),
            "python": platform.python_version(),
            "load_avg_at_start": [round(x, 2) for x in os.getloadavg()]}


def versions(extra: Sequence[str] = ()) -> Dict[str, Optional[str]]:
    from importlib import metadata
    out: Dict[str, Optional[str]] = {}
    for name in ("paddlepaddle", "paddleslim", "paddle2onnx", "onnx", "onnxruntime", "numpy",
                 "opencv-python", "pycocotools", *extra):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    out["ppyolo_slim_commit"] = git_commit()
    return out


def git_commit() -> Optional[str]:
    try:
        r = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True,
                           text=True, timeout=10)
        if r.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--", "ppyolo_slim"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return r.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def command_line() -> str:
    """As typed from the repository root."""
    return " ".join(shlex.quote(a) for a in ["python", os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]])


def header(name: str, quick: bool) -> Dict[str, Any]:
    return {"benchmark": name, "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S"),
            "command": command_line(), "quick": quick, "machine": machine(), "versions": versions()}


def result_path(name: str, quick: bool) -> str:
    """Full runs: benchmarks/results/NAME.json (what the README shows). --quick smoke runs go
    to benchmarks/work/quick/ so they never overwrite a real result."""
    folder = os.path.join(WORK, "quick") if quick else RESULTS
    return os.path.join(folder, f"{name}.json")


def _json_default(o):
    from ppyolo_slim.utils.io import json_default
    try:
        return json_default(o)
    except TypeError:      # results may carry paths and other objects: keep them as text
        return str(o)


def write_result(name: str, quick: bool, result: Mapping[str, Any]) -> str:
    from ppyolo_slim.utils.io import write_json
    path = result_path(name, quick)
    write_json(path, result, default=_json_default)
    print(f"wrote {os.path.relpath(path, REPO)}", flush=True)
    return path


def stats(times_ms: Sequence[float]) -> Dict[str, float]:
    t = np.asarray(times_ms, dtype=np.float64)
    return {"n": int(t.size), "median_ms": float(np.median(t)), "p90_ms": float(np.percentile(t, 90)),
            "mean_ms": float(t.mean()), "min_ms": float(t.min())}


def interleaved(candidates: Mapping[str, Callable[[], Any]], rounds: int, warmup: int = 2,
                per_round: int = 1) -> Dict[str, List[float]]:
    """Call every candidate ``warmup`` times, then ``rounds`` rounds in which each runs
    ``per_round`` timed calls, the order reversed every other round (A B, B A, ...) so a
    drift in machine load falls on all alike. Returns per-call times in ms."""
    names = list(candidates)
    for _ in range(warmup):
        for n in names:
            candidates[n]()
    times: Dict[str, List[float]] = {n: [] for n in names}
    for r in range(rounds):
        for n in (names if r % 2 == 0 else names[::-1]):
            for _ in range(per_round):
                t = time.perf_counter()
                candidates[n]()
                times[n].append(1000.0 * (time.perf_counter() - t))
    return times


def ratio(num: Sequence[float], den: Sequence[float]) -> Dict[str, float]:
    """median(num)/median(den), and the median of the round-by-round ratios (the pairs were
    timed next to each other, so this one is the least sensitive to the load changing)."""
    a, b = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    k = min(a.size, b.size)
    return {"of_medians": float(np.median(a) / np.median(b)),
            "median_of_pairs": float(np.median(a[:k] / b[:k]))}


def fmt_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table."""
    def cell(v):
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(out)
