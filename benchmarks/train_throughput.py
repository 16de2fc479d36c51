"""Training throughput (images per second) and peak memory (RSS) of the real trainer.

Each setting runs in its own process (so ru_maxrss is that setting's peak): the Trainer of
configs/sparse.yml (the default first stage: its batch, image size, mosaic, sparsity on) is
built, then a fixed number of training steps are timed end to end, data loading included
(warm-up steps first). The settings run in the order A B C ... then ... C B A, and each
is reported with its ratio to the default from the same repetition.

    python benchmarks/train_throughput.py                 # default, 1 thread, workers=0, no cache
    python benchmarks/train_throughput.py --quick         # tiny data, 64 px, 2 steps
    # the default setting in another environment too (another Paddle set), in the same turns:
    python benchmarks/train_throughput.py --settings 0 --python "Paddle 2.6.2=.venv-paddle2/bin/python"
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

# name -> config overrides on top of the config's own defaults
SETTINGS = {
    "default (threads 0 = every core, workers 2, cache on)": [],
    "1 math thread": ["threads=1"],
    "workers=0": ["workers=0"],
    "cache_images=false": ["cache_images=false"],
    # "env:K=V" entries go to the child's environment, not its config
    "glibc malloc defaults": ["env:PPYOLO_SLIM_MALLOC=default"],
    "cpu_ops=none (Paddle's kernels)": ["cpu_ops=none"],
}


def child(spec: dict) -> dict:
    """One setting: build the trainer, time ``steps`` steps after ``warmup`` steps."""
    import ppyolo_slim  # noqa: F401  (import order)
    import numpy as np
    from ppyolo_slim.config import load_config
    from ppyolo_slim.engine.trainer import Trainer
    cfg = load_config(spec["config"], spec["overrides"])
    t0 = time.time()
    tr = Trainer(cfg, progress=False)
    setup_s = time.time() - t0
    rss_after_setup = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    total = spec["warmup"] + spec["steps"]
    times, n_img, ni, epoch = [], [], 0, 0
    while ni < total:
        loader = tr.train_loader
        loader.set_epoch(epoch)
        it = iter(loader)
        i = 0
        while ni < total:
            t = time.perf_counter()
            try:
                imgs, targets, _ = next(it)
            except StopIteration:
                break
            tr.optimizer.set_step(ni, epoch)
            tr._forward_backward(imgs, targets, epoch, i)
            if (ni + 1) % tr.accumulate == 0 or i == tr.nb - 1:
                tr._optimizer_step(epoch + (i + 1) / tr.nb, epoch, i)
            times.append(time.perf_counter() - t)
            n_img.append(int(imgs.shape[0]))
            i += 1
            ni += 1
        epoch += 1
    w = spec["warmup"]
    secs, imgs = float(np.sum(times[w:])), int(np.sum(n_img[w:]))
    return {"img_per_s": imgs / secs, "step_ms_median": 1000 * float(np.median(times[w:])),
            "steps": len(times) - w, "images": imgs, "accumulate": tr.accumulate,
            "setup_s": round(setup_s, 1), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_after_setup_mb": rss_after_setup / 1024,
            "paddle_threads": tr.threads,   # what the trainer set (config `threads`, 0: every core)
            "paddle": __import__("paddle").__version__,
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}


def run_child(spec: dict, log) -> dict:
    # PYTHONPATH: another environment's interpreter runs this checkout's code, not its own install
    env = dict(os.environ, PYTHONPATH=C.REPO)
    env.update(o[4:].split("=", 1) for o in spec["overrides"] if o.startswith("env:"))
    spec = dict(spec, overrides=[o for o in spec["overrides"] if not o.startswith("env:")])
    r = subprocess.run([spec.get("python") or sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)],
                       capture_output=True, text=True, cwd=C.REPO, env=env)
    log.write(r.stderr)
    if r.returncode != 0:
        tail = "\n".join(r.stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"setting {spec['name']!r} failed (exit {r.returncode}):\n{tail}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--config", default="configs/sparse.yml")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per run")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="passes over the settings (2: forward and back)")
    ap.add_argument("--settings", default=",".join(str(i) for i in range(len(SETTINGS))),
                    help="indices into: " + "; ".join(f"{i}={n}" for i, n in enumerate(SETTINGS)))
    ap.add_argument("-o", "--override", action="append", default=[], help="extra config override, all runs")
    ap.add_argument("--python", action="append", default=[], metavar="LABEL=PATH",
                    help="also run the first setting with this interpreter (another venv, e.g. the other "
                         "Paddle set), in the same turns; its ratio is to the first setting here")
    ap.add_argument("--quick", action="store_true", help="smoke run: 16 tiny images, 64 px, 2 steps")
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(child(json.loads(a.child))))
        return 0

    names = [list(SETTINGS)[int(i)] for i in a.settings.split(",")]
    settings, pythons = dict(SETTINGS), {}
    for item in a.python:
        label, sep, path = item.partition("=")
        if not sep or not os.path.isfile(path):
            ap.error(f"--python {item!r}: expected LABEL=PATH of an existing interpreter")
        name = f"{names[0]}, {label}"
        settings[name], pythons[name] = settings[names[0]], os.path.abspath(path)
        names.append(name)
    work = os.path.join(C.WORK, "quick" if a.quick else "", "train_throughput")
    os.makedirs(work, exist_ok=True)
    base = [f"output_dir={os.path.join(work, 'out')}", "log.visualdl=false"] + list(a.override)
    if a.quick:
        from ppyolo_slim.data.shapes import generate_shapes
        data = generate_shapes(os.path.join(work, "shapes"), n_train=16, n_val=4, img_size=64, verbose=False)
        base += [f"data={data}", "img_size=64", "batch_size=4"]
        a.steps, a.warmup, a.repeats = 2, 1, 1
    result = C.header("train_throughput", a.quick)
    from ppyolo_slim.config import load_config
    cfg = load_config(a.config, base)
    result["settings"] = {"config": a.config, "overrides": base, "batch_size": cfg["batch_size"],
                          "img_size": cfg["img_size"], "data": cfg["data"], "steps": a.steps,
                          "warmup": a.warmup, "repeats": a.repeats}
    t0 = time.time()
    runs = {n: [] for n in names}
    with open(os.path.join(work, "children.log"), "w") as log:
        for rep in range(a.repeats):
            for n in (names if rep % 2 == 0 else names[::-1]):
                spec = {"name": n, "config": a.config, "overrides": base + settings[n],
                        "steps": a.steps, "warmup": a.warmup, "python": pythons.get(n)}
                r = run_child(spec, log)
                r["repeat"] = rep
                runs[n].append(r)
                print(f"[{rep}] {n:32s} {r['img_per_s']:6.2f} img/s  peak RSS {r['peak_rss_mb']:7.0f} MB",
                      flush=True)
    import numpy as np
    rows = []
    ref = names[0]
    for n in names:
        ips = [r["img_per_s"] for r in runs[n]]
        rel = [r["img_per_s"] / q["img_per_s"] for r, q in zip(runs[n], runs[ref])]
        rows.append({"setting": n, "img_per_s_median": float(np.median(ips)), "img_per_s_runs": ips,
                     "vs_default": float(np.median(rel)),
                     "peak_rss_mb": float(max(r["peak_rss_mb"] for r in runs[n])),
                     "paddle_threads": runs[n][0]["paddle_threads"], "paddle": runs[n][0].get("paddle"),
                     "python": pythons.get(n, sys.executable), "runs": runs[n]})
    result.update({"rows": rows, "seconds": round(time.time() - t0, 1),
                   "method": "one process per run; img/s over the timed steps (data loading, forward, "
                             "loss, backward, the trainer's optimizer step with its checks, sparsity "
                             "and EMA, every accumulate steps); peak RSS = ru_maxrss of that process "
                             "(loader workers are threads)"})
    C.write_result("train_throughput", a.quick, result)
    print(table(result))
    return 0


def table(result) -> str:
    return C.fmt_table(["setting", "Paddle", "img/s (median)", "vs default", "peak RSS MB", "math threads"],
                       [[r["setting"], r.get("paddle", ""), r["img_per_s_median"], f"{r['vs_default']:.2f}x",
                         r["peak_rss_mb"], r["paddle_threads"]] for r in result["rows"]])


if __name__ == "__main__":
    sys.exit(main())
