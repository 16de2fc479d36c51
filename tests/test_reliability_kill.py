"""SIGKILL at chosen and at random moments of training and of the pipeline: every file at its
final path stays whole, and the rerun (``--resume`` / the same pipeline command) finishes.

The child processes announce where they are through test-only hooks (tests/reliability_child.py);
the test kills them on the announcement it waits for.
"""
import json
import os
import random
import selectors
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

import ppyolo_slim  # noqa: F401  (import order)
from conftest import tiny_train_overrides
from ppyolo_slim.engine.checkpoint import load_checkpoint
from ppyolo_slim.model import load_weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHILD = os.path.join(ROOT, "tests", "reliability_child.py")
EPOCHS = 5


class Child:
    """A tool run whose stdout is read line by line, to be killed at an announced moment."""

    def __init__(self, tool, args, log_path, hold=None):
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop("RELIABILITY_HOLD", None)
        if hold:
            env["RELIABILITY_HOLD"] = hold
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, CHILD, tool] + list(args), cwd=ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=self.log)
        self.lines = []
        self._buf = b""

    def wait_for(self, pred, timeout=300):
        """Read stdout until a line satisfies ``pred``; that line, or None if the process ended."""
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.time() + timeout
        try:
            while time.time() < deadline:
                while b"\n" in self._buf:
                    line, self._buf = self._buf.split(b"\n", 1)
                    text = line.decode(errors="replace")
                    self.lines.append(text)
                    if pred(text):
                        return text
                if sel.select(timeout=1.0):
                    chunk = os.read(self.proc.stdout.fileno(), 65536)
                    if not chunk:
                        self.proc.wait()
                        return None
                    self._buf += chunk
            raise AssertionError(f"timeout waiting; last lines: {self.lines[-5:]}")
        finally:
            sel.close()

    def kill(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.proc.stdout.close()
        self.log.close()
        return self.proc.returncode

    def finish(self, timeout=600):
        out = self.proc.stdout.read().decode(errors="replace")
        self.lines += out.splitlines()
        self.proc.wait(timeout)
        self.proc.stdout.close()
        self.log.close()
        return self.proc.returncode


def assert_every_file_whole(folder):
    """Each file at a final (not temporary) name reads back completely; returns their names."""
    import cv2
    import onnx
    checked = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]     # temporary export folders
        for f in files:
            p = os.path.join(root, f)
            if f.startswith(".") or f.endswith(".tmp") or f.startswith("vdlrecords"):
                continue            # temporary names; VisualDL's append-only logs
            if f.endswith(".pdparams"):
                load_weights(p)
            elif f.endswith(".state"):
                load_checkpoint(p[: -len(".state")] + ".pdparams")
            elif f.endswith(".json"):
                with open(p) as fh:
                    json.load(fh)
            elif f.endswith((".yml", ".yaml")):
                with open(p) as fh:
                    assert yaml.safe_load(fh) is not None, p
            elif f.endswith(".onnx"):
                onnx.load(p)
            elif f.endswith(".png"):
                assert cv2.imread(p) is not None, p
            checked.append(os.path.relpath(p, folder))
    return checked


def temp_files(folder):
    return sorted(f for f in os.listdir(folder) if f.endswith(".tmp"))


def train_args(tiny_data, out, resume=False):
    args = ["-c", "configs/sparse.yml", "--no-progress"]
    # the subgradient form: every epoch may write best.pdparams (the gradual method's first
    # eligible epoch comes later), so step 1 below catches the very first checkpoint write
    for o in tiny_train_overrides(tiny_data, out, epochs=EPOCHS, **{"log.images": 0,
                                                                    "sparsity.method": "subgradient"}):
        args += ["-o", o]
    return args + (["--resume"] if resume else [])


def state_epoch(out):
    return load_checkpoint(str(out / "last.pdparams"))["train"]["epoch"]


def weights_epoch(out):
    return load_weights(str(out / "last.pdparams"))[1]["train"]["epoch"]


def assert_same_weights(a, b):
    sa, sb = load_weights(str(a))[0], load_weights(str(b))[0]
    assert sa.keys() == sb.keys()
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)


@pytest.fixture(scope="module")
def straight_run(tiny_data, tmp_path_factory):
    """The same run, never interrupted: what every killed-and-resumed run must end with."""
    out = tmp_path_factory.mktemp("straight")
    c = Child("train", train_args(tiny_data, out), out / "log.txt")
    assert c.finish() == 0, (out / "log.txt").read_text()[-2000:]
    return out


@pytest.mark.slow
def test_kill_at_each_kind_of_moment_then_resume(tiny_data, tmp_path, straight_run):
    out = tmp_path / "run"
    log = tmp_path / "log.txt"

    # 1. during the very first checkpoint write (best.pdparams of epoch 1): nothing to resume yet
    c = Child("train", train_args(tiny_data, out), log, hold="best.pdparams")
    assert c.wait_for(lambda s: s.startswith("@@ write .best.pdparams."))
    c.kill()
    assert temp_files(out) and temp_files(out)[0].startswith(".best.pdparams.")
    assert assert_every_file_whole(out) == ["config.yml"]
    r = subprocess.run([sys.executable, "tools/train.py"] + train_args(tiny_data, out, resume=True),
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "last.state: no training state" in r.stderr.strip().splitlines()[-1]

    # 2. mid-step: inside epoch 2's second step (a fresh start, the temp file of 1. lying around)
    c = Child("train", train_args(tiny_data, out), log)
    assert c.wait_for(lambda s: s == "@@ step 1 1")
    c.kill()
    assert "best.pdparams" in assert_every_file_whole(out) and state_epoch(out) == 0

    # 3. while last.state is half-written (epoch 2): the previous state and weights stay
    c = Child("train", train_args(tiny_data, out, resume=True), log, hold="last.state")
    assert c.wait_for(lambda s: s.startswith("@@ write .last.state."))
    c.kill()
    assert_every_file_whole(out)
    assert state_epoch(out) == 0 and weights_epoch(out) == 0

    # 4. while last.pdparams is half-written: last.state is already new, and resume reads only it
    c = Child("train", train_args(tiny_data, out, resume=True), log, hold="last.pdparams")
    assert c.wait_for(lambda s: s.startswith("@@ write .last.pdparams."))
    c.kill()
    assert_every_file_whole(out)
    assert state_epoch(out) == 1 and weights_epoch(out) == 0

    # 5. during evaluation (epoch 3)
    c = Child("train", train_args(tiny_data, out, resume=True), log)
    assert c.wait_for(lambda s: s == "@@ eval")
    assert any(s == "@@ step 2 0" for s in c.lines), "the eval killed is epoch 3's"
    c.kill()
    assert_every_file_whole(out)
    assert state_epoch(out) == 1

    # the resumed run finishes, and ends exactly where the uninterrupted run did
    c = Child("train", train_args(tiny_data, out, resume=True), log)
    assert c.finish() == 0, log.read_text()[-2000:]
    assert_every_file_whole(out)
    assert temp_files(out) == [], "the killed writers' temporary files are cleaned up on resume"
    res = json.loads((out / "results.json").read_text())
    assert [h["epoch"] for h in res["history"]] == list(range(EPOCHS))
    assert_same_weights(out / "last.pdparams", straight_run / "last.pdparams")
    assert_same_weights(out / "best.pdparams", straight_run / "best.pdparams")


@pytest.mark.slow
def test_kill_at_random_moments_then_resume(tiny_data, tmp_path, straight_run):
    rng = random.Random(20261123)
    out = tmp_path / "run"
    log = tmp_path / "log.txt"
    for _ in range(3):
        resume = (out / "last.state").is_file()
        c = Child("train", train_args(tiny_data, out, resume=resume), log)
        c.wait_for(lambda s: s.startswith("@@ step"))      # start-up done, training under way
        time.sleep(rng.uniform(0.0, 1.5))
        c.kill()
        assert_every_file_whole(out)
    c = Child("train", train_args(tiny_data, out, resume=(out / "last.state").is_file()), log)
    assert c.finish() == 0, log.read_text()[-2000:]
    assert_same_weights(out / "last.pdparams", straight_run / "last.pdparams")


def pipeline_args(tiny_data, out):
    args = ["--output", str(out), "--no-progress"]
    for o in ("epochs=1", "pipeline.finetune_epochs=1", "img_size=64", "batch_size=8", "workers=0",
              "log.images=0", "schedule.warmup_epochs=0.0", f"data={tiny_data}"):
        args += ["-o", o]
    return args


@pytest.mark.slow
def test_kill_pipeline_between_and_inside_stages_then_rerun(tiny_data, tmp_path):
    out = tmp_path / "pipe"
    log = tmp_path / "log.txt"

    def done():
        return set(json.loads((out / "pipeline_state.json").read_text())["done"])

    # 1. between stages: dense and sparse recorded as done, prune not started
    c = Child("pipeline", pipeline_args(tiny_data, out), log)
    assert c.wait_for(lambda s: s == "[pipeline] prune ...")
    c.kill()
    assert done() == {"dense", "sparse"}
    assert_every_file_whole(out)

    # 2. inside a training stage, while its last.pdparams is half-written (the one epoch done
    # in last.state): the rerun resumes a run that needs no more epochs
    c = Child("pipeline", pipeline_args(tiny_data, out), log, hold="last.pdparams")
    assert c.wait_for(lambda s: s.startswith("@@ write .last.pdparams.") and
                      any(x == "[pipeline] finetune ..." for x in c.lines))
    c.kill()
    assert done() == {"dense", "sparse", "prune"}
    assert_every_file_whole(out)
    assert temp_files(out / "finetune") and (out / "finetune" / "best.pdparams").is_file()

    # 3. inside the export stage, after its first model
    c = Child("pipeline", pipeline_args(tiny_data, out), log)
    assert c.wait_for(lambda s: s.startswith("exporting ") and "/prune/pruned.pdparams" in s)
    assert any("finetune: resuming from" in s for s in c.lines)
    c.kill()
    assert done() == {"dense", "sparse", "prune", "finetune"}
    assert_every_file_whole(out)

    # the rerun finishes: every stage done, the summary written, every file whole
    c = Child("pipeline", pipeline_args(tiny_data, out), log)
    assert c.finish() == 0, log.read_text()[-3000:]
    assert done() == {"dense", "sparse", "prune", "finetune", "export", "deploy", "summary", "quant"}
    files = assert_every_file_whole(out)
    left = [os.path.join(r, n) for r, ds, fs in os.walk(out) for n in fs + ds
            if n.endswith(".tmp") or ".export-" in n]
    assert left == [], f"temporary files of the killed runs are left: {left}"
    for f in ("summary.md", "summary.json", "export/finetuned/model.onnx", "finetune/best.pdparams",
              "finetune/last.pdparams"):
        assert f in files, f
    assert "| fine-tuned |" in (out / "summary.md").read_text()
