"""Training at a tiny scale: outputs, dashboards, resume, divergence, determinism, multi-process."""
import os
import re
import sys

import numpy as np
import pytest

import ppyolo_slim
from conftest import tiny_train_overrides
from ppyolo_slim.config import load_config
from ppyolo_slim.engine.trainer import TrainingDiverged, train
from ppyolo_slim.model import load_weights


def _cfg(tiny_data, out, config="configs/sparse.yml", **extra):
    return load_config(config, tiny_train_overrides(tiny_data, out, **extra))


@pytest.fixture(scope="module")
def two_epochs(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    summary = train(_cfg(tiny_data, out), progress=False)
    return out, summary


@pytest.mark.compat
def test_run_writes_weights_results_and_metadata(two_epochs):
    out, summary = two_epochs
    for f in ("best.pdparams", "last.pdparams", "last.state", "results.json", "config.yml"):
        assert (out / f).is_file(), f
    assert len(summary["history"]) == 2 and "map50_95" in summary["history"][-1]
    model = ppyolo_slim.load_model(str(out / "best.pdparams"))
    assert model.meta.names == ["circle", "square", "triangle", "star", "cross"][:model.nc]
    assert model.meta.made_by["stage"] == "sparse" and model.meta.img_size == 64
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]


def test_visualdl_logs_read_back(two_epochs):
    from visualdl import LogReader
    out, _ = two_epochs
    logdir = out / "vdl"
    files = [f for f in os.listdir(logdir) if f.startswith("vdlrecords")]
    reader = LogReader(file_path=str(logdir / files[0]))
    tags = reader.get_tags()
    scalars = set(tags["scalar"])
    for t in ("train/box_loss", "train/obj_loss", "train/cls_loss", "lr/weights", "time/step_ms",
              "val/mAP50", "val/mAP50-95", "sparsity/share_below_1e-2", "sparsity/share_below_1e-3"):
        assert t in scalars, (t, scalars)
    assert "sparsity/gamma_abs" in tags["histogram"]
    assert len(tags["image"]) == 2
    steps = [r.id for r in reader.get_data("scalar", "val/mAP50")]
    assert steps == [0, 1]


def _weights(path):
    state, _ = load_weights(str(path))
    return state


class _StopAfter:
    """Interrupts training right after an epoch's checkpoint is written, like a kill would."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_save(self, trainer, epoch, record):
        if epoch == self.epoch:
            raise KeyboardInterrupt


@pytest.mark.compat
def test_resume_gives_the_same_weights_as_a_straight_run(tiny_data, tmp_path, capsys):
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(_cfg(tiny_data, straight, epochs=3), progress=False)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(tiny_data, split, epochs=3), progress=False, callbacks=[_StopAfter(1)])
    capsys.readouterr()
    train(_cfg(tiny_data, split, epochs=3), resume=str(split / "last.pdparams"), progress=False)
    assert re.search(r"^resuming .*last\.pdparams from epoch 3 of 3 ", capsys.readouterr().err, re.M)
    a, b = _weights(straight / "last.pdparams"), _weights(split / "last.pdparams")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_two_runs_with_one_seed_give_the_same_weights(tiny_data, tmp_path):
    train(_cfg(tiny_data, tmp_path / "a", epochs=1), progress=False)
    train(_cfg(tiny_data, tmp_path / "b", epochs=1), progress=False)
    a, b = _weights(tmp_path / "a" / "last.pdparams"), _weights(tmp_path / "b" / "last.pdparams")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    c = tmp_path / "c"
    train(_cfg(tiny_data, c, epochs=1, seed=1), progress=False)
    assert any(not np.array_equal(a[k], v) for k, v in _weights(c / "last.pdparams").items())


def test_nan_loss_stops_and_keeps_last_checkpoint(tiny_data, tmp_path):
    out = tmp_path / "nan"
    train(_cfg(tiny_data, out, epochs=1, nominal_batch_size=8), progress=False)
    before = (out / "last.pdparams").read_bytes(), (out / "last.state").read_bytes()
    with pytest.raises(TrainingDiverged, match=r"epoch 2, step \d+: .*(loss|gradients)") as e:
        train(_cfg(tiny_data, out, epochs=2, nominal_batch_size=8, **{"optimizer.lr0": 1e12}),
              resume=str(out / "last.pdparams"),
              progress=False)
    assert "intact" in str(e.value)
    assert ((out / "last.pdparams").read_bytes(), (out / "last.state").read_bytes()) == before


@pytest.mark.slow
def test_two_cpu_processes_end_with_identical_weights(tiny_data, tmp_path):
    import json
    import subprocess
    import sys
    out = tmp_path / "ddp"
    cmd = [sys.executable, "tools/train.py", "-c", "configs/sparse.yml", "--nprocs", "2", "--no-progress"]
    for o in tiny_train_overrides(tiny_data, out, epochs=1, **{"log.images": 0}):
        cmd += ["-o", o]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    digests = res["rank_weight_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]
    assert r.stderr.count(f"data {tiny_data}:") == 1, r.stderr[-3000:]     # one summary, not one per rank
    assert "tcp_utils" not in r.stderr, r.stderr[-3000:]                    # nor the ranks' connection log
    # rank 0 alone writes: one VisualDL record file, one set of checkpoints
    assert len([f for f in os.listdir(out / "vdl") if f.startswith("vdlrecords")]) == 1
    assert sorted(f for f in os.listdir(out) if f.endswith((".pdparams", ".state"))) == \
        ["best.pdparams", "last.pdparams", "last.state"]


def test_fresh_model_has_the_detect_priors_once(tiny_data, tmp_path):
    """ultralytics _initialize_biases: obj += log(8 / (640 / s)^2), cls += log(0.6 / (nc - 0.99)),
    applied once (a second application starts objectness near 1e-4 and stalls short runs)."""
    import math
    from ppyolo_slim.engine.trainer import Trainer
    t = Trainer(_cfg(tiny_data, tmp_path / "priors", weights="null"), progress=False)
    det = t.core.detect
    for mi, s in zip(det.m, det.stride):
        b = mi.bias.numpy().reshape(det.na, det.no)
        np.testing.assert_allclose(b[:, 4], math.log(8 / (640 / s) ** 2), atol=1e-6)
        np.testing.assert_allclose(b[:, 5:], math.log(0.6 / (det.nc - 0.99)), atol=1e-6)
        np.testing.assert_allclose(b[:, :4], 0.0, atol=1e-6)


def test_resume_path_without_config_takes_the_runs_own_config(two_epochs, tmp_path):
    """ultralytics' `--resume PATH`: the run's saved settings and folder, not configs/sparse.yml's."""
    import shutil
    from ppyolo_slim.engine.run import train_config
    out, _ = two_epochs
    moved = tmp_path / "moved"                      # a run folder that was moved keeps working
    shutil.copytree(out, moved)
    cfg = train_config(None, ["epochs=3", "threads=1"], str(moved / "last.pdparams"))
    assert cfg["output_dir"] == str(moved) and cfg["img_size"] == 64 and cfg["epochs"] == 3
    assert cfg["threads"] == 1 and cfg["sparsity"]["enabled"] is True
    assert cfg["data"] == load_config(str(out / "config.yml"))["data"]
    from ppyolo_slim.engine.trainer import Trainer
    Trainer(cfg, resume=str(moved / "last.pdparams"), progress=False)   # nothing to refuse


def test_resume_with_another_recipe_or_folder_is_refused(two_epochs, tiny_data, tmp_path, capsys):
    from ppyolo_slim.engine.trainer import Trainer
    out, _ = two_epochs
    last = str(out / "last.pdparams")
    # the run's own overrides with more epochs and other threads: fine
    Trainer(_cfg(tiny_data, out, epochs=4, threads=1), resume=last, progress=False)
    # a lower LR and mosaic off may change on resume; they are listed
    Trainer(_cfg(tiny_data, out, **{"optimizer.lr0": 0.0005, "augment.mosaic": 0.0}), resume=last, progress=False)
    err = capsys.readouterr().err
    assert "resume: changed from the run: augment.mosaic was 1.0 in the run, is 0.0 now; optimizer.lr0" in err
    # sparsity off and another image size: each named, with what to do
    with pytest.raises(ValueError) as e:
        Trainer(_cfg(tiny_data, out, **{"sparsity.enabled": False, "img_size": 96}), resume=last, progress=False)
    msg = str(e.value)
    assert f"cannot resume {last}" in msg and "sparsity.enabled was True in the run, is False now" in msg
    assert "img_size was 64 in the run, is 96 now" in msg and "--resume PATH without -c" in msg
    # another output folder: the resumed run would write over someone else's files
    with pytest.raises(ValueError, match=r"it would write to output_dir=.*other, not to the run's own folder"):
        Trainer(_cfg(tiny_data, tmp_path / "other"), resume=last, progress=False)


def test_train_tool_refuses_to_start_over_a_run_unless_told(two_epochs, tiny_data, tmp_path, capsys):
    import shutil
    from conftest import load_tool
    out, _ = two_epochs
    run = tmp_path / "run"
    shutil.copytree(out, run)
    before = (run / "last.state").read_bytes()
    args = ["--no-progress"]
    for o in tiny_train_overrides(tiny_data, run, epochs=1):
        args += ["-o", o]
    assert load_tool("train").main(args) == 2
    assert re.search(r"^error: .* already holds a training run .*--resume.*--exist-ok", capsys.readouterr().err)
    assert (run / "last.state").read_bytes() == before          # nothing was touched
    # --resume PATH with no -c: continues the run from its own settings (2 epochs: nothing left)
    assert load_tool("train").main(["--no-progress", "--resume", str(run / "last.pdparams")]) == 0
    assert "already finished 2 epochs" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["missing weights", "state as weights", "resume without a state"])
def test_train_tool_checks_its_files_before_scanning_the_data(case, tmp_path, capsys, monkeypatch):
    """The data scan can take minutes on a real set: a wrong --weights or --resume is reported first."""
    from conftest import load_tool
    import ppyolo_slim.data as data
    monkeypatch.setattr(data, "load_data", lambda *a, **k: pytest.fail("the data was scanned first"))
    (tmp_path / "last.state").write_bytes(b"\x80\x04N.")
    args = {"missing weights": ["--weights", str(tmp_path / "missing.pdparams")],
            "state as weights": ["--weights", str(tmp_path / "last.state")],
            "resume without a state": ["--resume", str(tmp_path / "run" / "last.pdparams")]}[case]
    rc = load_tool("train").main(["-c", "configs/sparse.yml", "-o", f"output_dir={tmp_path / 'run'}"] + args)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert {"missing weights": "missing.pdparams: no such weights file",
            "state as weights": "a training state (what --resume reads), not weights",
            "resume without a state": "last.state: no training state beside"}[case] in err


_FAULTS = """
import resource, sys
import ppyolo_slim
import paddle
from ppyolo_slim.utils.runtime import set_cpu_threads
set_cpu_threads(1)
x = paddle.randn([16, 16, 128, 128])      # 16.8 MB, as a stem activation at batch 16, 256 px
for _ in range(4):                         # the heap grows to its working size first
    y = x * 1.0
    del y
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    y = x * 1.0
    del y
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.compat
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_cpu_work_reuses_freed_memory_instead_of_page_faulting_it_in():
    """set_cpu_threads (trainer, infer) keeps freed blocks in the heap: five 16.8 MB tensors
    made and freed fault nothing in; glibc's defaults fault each one in (~4,100 pages)."""
    import subprocess

    def faults(**env):
        out = subprocess.run([sys.executable, "-c", _FAULTS], capture_output=True, text=True, check=True,
                             env={**os.environ, **env})
        return int(out.stdout.strip().splitlines()[-1])
    default, kept = faults(PPYOLO_SLIM_MALLOC="default"), faults()
    assert default > 5 * 3000 and kept < 500, (default, kept)
