"""A non-editable install (``pip install .`` into a folder of its own) carries the deploy library:
the CPU check, the engine builder's imports, trt_build's CLI and ``--engine`` work from outside
the checkout, with nothing of the checkout on sys.path."""
import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """pip install of a copy of the tracked files (so the checkout gets no build/ or egg-info),
    into a target folder of its own; --no-deps: the dependencies are installed already."""
    src = tmp_path_factory.mktemp("src")
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for rel in filter(None, files.decode().split("\0")):
        if os.path.isfile(os.path.join(ROOT, rel)):
            os.makedirs(os.path.dirname(src / rel), exist_ok=True)
            shutil.copy2(os.path.join(ROOT, rel), src / rel)
    target = tmp_path_factory.mktemp("site")
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "--quiet",
                        "--target", str(target), str(src)], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert os.path.isfile(target / "ppyolo_slim" / "deploy" / "check.py")
    assert not os.path.exists(target / "deploy"), "deploy/ holds scripts; the library is ppyolo_slim.deploy"
    return target


def _run(installed, cwd, args, **kw):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PPYOLO_SLIM_ASSUME_GPU")}
    env["PYTHONPATH"] = str(installed)
    return subprocess.run([sys.executable] + args, capture_output=True, text=True, timeout=600,
                          cwd=cwd, env=env, **kw)


@pytest.mark.slow
def test_installed_package_runs_the_deploy_check_from_outside_the_checkout(installed, tmp_path):
    code = """
import json, os, sys
import ppyolo_slim, paddle
from ppyolo_slim.model import ModelMeta, build_model, save_weights
assert ppyolo_slim.__file__.startswith(sys.argv[1]), ppyolo_slim.__file__
assert not any(os.path.isdir(os.path.join(p, "deploy")) for p in sys.path if p), "a checkout is on sys.path"
meta = ModelMeta(nc=2, names=["a", "b"])
paddle.seed(0)
save_weights("w.pdparams", build_model(meta).state_dict(), meta)
from ppyolo_slim.deploy.check import check_against_paddle
import ppyolo_slim.deploy.engine, ppyolo_slim.deploy.trt_runtime, ppyolo_slim.deploy.trt_infer  # noqa
rep = check_against_paddle("w.pdparams", img_size=64)
print(json.dumps({"passed": rep.passed, "exact": rep.exact_max_rel_diff}))
"""
    r = _run(installed, tmp_path, ["-c", code, str(installed)])
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout.strip().splitlines()[-1])
    assert rep["passed"] and rep["exact"] < 1e-10
    # the CLI as a module of the installed package, then without TensorRT: exit 2, one reason
    r = _run(installed, tmp_path, ["-m", "ppyolo_slim.deploy.trt_build", "--weights", "w.pdparams",
                                   "--check", "--img-size", "64"])
    assert r.returncode == 0 and "PASS" in r.stdout, r.stdout + r.stderr
    r = _run(installed, tmp_path, ["-m", "ppyolo_slim.deploy.trt_build", "--weights", "w.pdparams"])
    assert r.returncode == 2 and "TensorRT" in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.mark.slow
def test_installed_package_engine_predictor_is_one_clear_line(installed, tmp_path):
    """--engine's loader imports ppyolo_slim.deploy from the install (no sys.path insertion)."""
    (tmp_path / "x.engine").write_bytes(b"not built here")
    code = """
from ppyolo_slim.engine.predict import PredictorUnavailable, load_predictor
try:
    load_predictor("engine", "x.engine")
except PredictorUnavailable as e:
    print("UNAVAILABLE", str(e).splitlines()[0])
"""
    r = _run(installed, tmp_path, ["-c", code])
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("UNAVAILABLE --engine needs TensorRT and an NVIDIA GPU"), r.stdout
