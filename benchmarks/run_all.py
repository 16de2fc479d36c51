"""Run every benchmark in turn; each writes its JSON to benchmarks/results/ (--quick: to
benchmarks/work/quick/), then the README tables are printed from those files.

    python benchmarks/run_all.py                 # everything (slimming takes hours on a CPU)
    python benchmarks/run_all.py --quick         # smoke run of every script
    python benchmarks/run_all.py --only latency,peer
    python benchmarks/run_all.py --slimming-args "--sparse output/sparse/best.pdparams --finetune-epochs 10"
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ORDER = ("latency", "train_throughput", "peer", "slimming")   # short ones first


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", help=f"comma-separated subset of {', '.join(ORDER)}")
    for name in ORDER:
        ap.add_argument(f"--{name.replace('_', '-')}-args", default="", help=f"extra arguments for {name}.py")
    a = ap.parse_args(argv)
    names = [n.strip() for n in a.only.split(",")] if a.only else list(ORDER)
    for n in names:
        if n not in ORDER:
            ap.error(f"--only: unknown benchmark {n!r} ({', '.join(ORDER)})")
    failed = []
    for n in names:
        cmd = [sys.executable, os.path.join(HERE, f"{n}.py")] + (["--quick"] if a.quick else []) \
            + shlex.split(getattr(a, f"{n}_args"))
        print(f"==> {' '.join(shlex.quote(c) for c in cmd)}", flush=True)
        t = time.time()
        rc = subprocess.call(cmd, cwd=os.path.dirname(HERE))
        print(f"<== {n}: exit {rc} in {time.time() - t:.0f} s", flush=True)
        if rc != 0:
            failed.append(n)
    subprocess.call([sys.executable, os.path.join(HERE, "tables.py")] + (["--quick"] if a.quick else []),
                    cwd=os.path.dirname(HERE))
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
