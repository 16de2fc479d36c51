"""Run the tests on the *other* dependency set, in a venv of its own.

The README's test command runs the whole suite in the current environment (the set that
``pip install -e .`` gave it), then this script. It finds which Paddle the current
environment has, and for the other set (setup.py's ``PPYOLO_SLIM_PADDLE=2`` or ``=3``):

1. creates ``.venv-paddle<N>`` in the repository (kept and reused on a later run);
2. installs the package into it from the package registries, the same two steps as for any
   install of that set: ``PPYOLO_SLIM_PADDLE=N pip install -e ".[test]"``, then
   ``pip install --no-deps paddleslim==2.6.0 onednn-devel-cpu-gomp==2023.2.0 tensorrt-stubs==10.13.0.35.1``;
3. runs the compatibility subset there: ``pytest -m compat`` (the tests marked ``compat``,
   which cover train, sparsity, PaddleSlim pruning, distillation, quantization, export checked
   in onnxruntime, Paddle Inference and the TensorRT builder's CPU check). ``--full`` runs the
   whole suite instead; anything after ``--`` goes to pytest.

Exit status: pytest's (a failed install exits with pip's).

    python tools/test_other_set.py            # the compat subset on the other set
    python tools/test_other_set.py --full     # the whole suite there
    python tools/test_other_set.py --set 3 -- -k export
"""
from __future__ import annotations

import argparse
import importlib.metadata
import os
import subprocess
import sys
import time
import venv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETS = {"2": "Paddle 2.6.2", "3": "Paddle 3.3"}
# PaddleSlim goes in without its dependencies on both sets: on the Paddle 3 set its
# opencv-python==4.6.0.66 pin (numpy 1.x) would break numpy 2; on 2.6 it is already there.
# tensorrt-stubs' own dependency (tensorrt) cannot install on a machine without NVIDIA's index.
# onednn-devel-cpu-gomp: oneDNN's headers for the trainer's conv op (engine/cpu_ops); its own
# dependency is a second oneDNN library the op does not use.
NO_DEPS = ["paddleslim==2.6.0", "onednn-devel-cpu-gomp==2023.2.0", "tensorrt-stubs==10.13.0.35.1"]


def current_set() -> str | None:
    """The set of the environment running this script: the major version of its Paddle."""
    for dist in ("paddlepaddle", "paddlepaddle-gpu"):
        try:
            return importlib.metadata.version(dist).split(".")[0]
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def target_set(here: str | None, forced: str | None = None) -> str | None:
    """The set to test: ``forced``, else the one ``here`` (this environment's) is not."""
    return forced or {"2": "3", "3": "2"}.get(here or "")


def venv_python(path: str) -> str:
    return os.path.join(path, "Scripts" if os.name == "nt" else "bin",
                        "python.exe" if os.name == "nt" else "python")


def run(cmd, env, what: str) -> int:
    t = time.monotonic()
    print(f"[test_other_set] {what}: {' '.join(cmd)}", flush=True)
    rc = subprocess.call(cmd, cwd=ROOT, env=env)
    print(f"[test_other_set] {what}: exit {rc} after {time.monotonic() - t:.0f} s", flush=True)
    return rc


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    pytest_args = []
    if "--" in argv:
        i = argv.index("--")
        argv, pytest_args = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", choices=sorted(SETS), help="the set to test (default: the one this environment does not have)")
    ap.add_argument("--full", action="store_true", help="the whole suite, not only the tests marked compat")
    ap.add_argument("--venv", help="the venv to use (default: .venv-paddle<set> in the repository)")
    args = ap.parse_args(argv)

    here = current_set()
    target = target_set(here, args.set)
    if target is None:
        ap.error(f"this environment has no paddlepaddle{'' if here is None else ' ' + here + '.x'}: "
                 "say which set with --set 2 or --set 3")
    path = os.path.abspath(args.venv or os.path.join(ROOT, f".venv-paddle{target}"))
    py = venv_python(path)
    print(f"[test_other_set] this environment: {SETS.get(here or '', 'no Paddle')}; testing {SETS[target]} in {path}",
          flush=True)

    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PPYOLO_SLIM_GPU", "PPYOLO_SLIM_PADDLE")}
    env["PPYOLO_SLIM_PADDLE"] = target   # setup.py's choice of set; the CPU wheel (the tests need no GPU)
    env["VIRTUAL_ENV"] = path
    env["PATH"] = os.path.dirname(py) + os.pathsep + env.get("PATH", "")

    t0 = time.monotonic()
    if not os.path.exists(py):
        print(f"[test_other_set] creating {path}", flush=True)
        venv.EnvBuilder(with_pip=True).create(path)
    pip = [py, "-m", "pip", "install", "-q"]
    for cmd, what in ((pip + ["-e", ".[test]"], "install"), (pip + ["--no-deps", *NO_DEPS], "install --no-deps")):
        rc = run(cmd, env, what)
        if rc:
            return rc
    print(f"[test_other_set] {SETS[target]} venv ready after {time.monotonic() - t0:.0f} s", flush=True)
    return run([py, "-m", "pytest", "-q", *([] if args.full else ["-m", "compat"]), *pytest_args], env, "pytest")


if __name__ == "__main__":
    sys.exit(main())
