"""The embedded shapes set: deterministic, in the ultralytics layout, never half-written."""
import filecmp
import json
import os
import subprocess
import sys

import ppyolo_slim  # noqa: F401  (native import order)
import numpy as np
import pytest
import yaml

from ppyolo_slim.data import DataError, generate_shapes, load_data
from ppyolo_slim.data import shapes as S

SMALL = dict(n_train=6, n_val=3, img_size=64)


def files(root):
    out = []
    for d, _, fs in os.walk(root):
        out += [os.path.relpath(os.path.join(d, f), root) for f in fs]
    return sorted(out)


def test_layout_and_labels(tmp_path):
    y = generate_shapes(str(tmp_path / "s"), seed=3, verbose=False, **SMALL)
    root = tmp_path / "s"
    assert y == str(root / "data.yaml")
    d = yaml.safe_load(open(y))
    assert d["names"] == S.NAMES and d["train"] == "images/train" and d["val"] == "images/val"
    for split, n in (("train", 6), ("val", 3)):
        imgs = sorted(os.listdir(root / "images" / split))
        labs = sorted(os.listdir(root / "labels" / split))
        assert len(imgs) == n and [os.path.splitext(f)[0] for f in imgs] == [os.path.splitext(f)[0] for f in labs]
        for f in labs:
            rows = np.loadtxt(root / "labels" / split / f, ndmin=2)
            assert rows.shape[1] == 5 and 1 <= len(rows) <= 8
            assert set(rows[:, 0].astype(int)) <= set(range(len(S.NAMES)))
            cx, cy, w, h = rows[:, 1:].T
            assert (w > 0).all() and (h > 0).all()
            assert (cx - w / 2 >= -1e-6).all() and (cx + w / 2 <= 1 + 1e-6).all()
            assert (cy - h / 2 >= -1e-6).all() and (cy + h / 2 <= 1 + 1e-6).all()
    marker = json.load(open(root / S.MARKER))
    assert marker["params"] == dict(SMALL, seed=3, version=S.GENERATOR_VERSION)
    spec = load_data(y, verbose=False)
    assert spec.report.issues == [] and len(spec.train) == 6 and len(spec.val) == 3


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a, b, c = (str(tmp_path / k) for k in "abc")
    generate_shapes(a, seed=7, verbose=False, **SMALL)
    generate_shapes(b, seed=7, verbose=False, **SMALL)
    generate_shapes(c, seed=8, verbose=False, **SMALL)
    fa = [f for f in files(a) if f != "data.yaml" and f != S.MARKER]
    assert fa == [f for f in files(b) if f not in ("data.yaml", S.MARKER)]
    _, mismatch, errors = filecmp.cmpfiles(a, b, fa, shallow=False)
    assert mismatch == [] and errors == [], "labels and images byte-identical"
    labels = [f for f in fa if f.endswith(".txt")]
    _, mismatch, _ = filecmp.cmpfiles(a, c, labels, shallow=False)
    assert len(mismatch) == len(labels), "another seed gives other labels"


def test_images_vary_in_size_and_content(tmp_path):
    rng_sizes = {S.render_image(np.random.default_rng([0, 0, i]), 64)[0].shape[:2] for i in range(40)}
    assert len(rng_sizes) >= 3 and (64, 64) in rng_sizes
    counts = [len(S.render_image(np.random.default_rng([1, 0, i]), 96)[1]) for i in range(40)]
    assert min(counts) >= 1 and max(counts) >= 5
    classes = np.concatenate([S.render_image(np.random.default_rng([2, 0, i]), 96)[1][:, 0]
                              for i in range(40)])
    assert set(classes.astype(int)) == set(range(len(S.NAMES)))


def test_crash_leaves_no_half_set(tmp_path, monkeypatch):
    out = tmp_path / "s"
    calls = {"n": 0}
    real = S.render_image

    def flaky(rng, size):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt("simulated crash")
        return real(rng, size)
    monkeypatch.setattr(S, "render_image", flaky)
    with pytest.raises(KeyboardInterrupt):
        S.ensure_shapes(str(out), seed=0, verbose=False, **SMALL)
    assert not out.exists() and os.listdir(tmp_path) == [], "nothing left behind"
    monkeypatch.setattr(S, "render_image", real)
    y = S.ensure_shapes(str(out), seed=0, verbose=False, **SMALL)
    assert os.path.isfile(y) and os.path.isfile(out / S.MARKER)


def test_ensure_reuses_regenerates_and_refuses(tmp_path):
    out = tmp_path / "s"
    S.ensure_shapes(str(out), seed=0, verbose=False, **SMALL)
    m = (out / S.MARKER).stat().st_mtime_ns
    S.ensure_shapes(str(out), seed=0, verbose=False, **SMALL)
    assert (out / S.MARKER).stat().st_mtime_ns == m, "complete set reused"
    S.ensure_shapes(str(out), seed=1, verbose=False, **SMALL)     # other parameters: replaced
    assert json.load(open(out / S.MARKER))["params"]["seed"] == 1
    assert sorted(os.listdir(tmp_path)) == ["s"], "no stale or temporary folders left"

    (out / S.MARKER).unlink()           # e.g. a user's folder, or an interrupted old tool
    with pytest.raises(DataError, match="not made by the shapes generator"):
        S.ensure_shapes(str(out), seed=1, verbose=False, **SMALL)


def test_cli(tmp_path):
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = tmp_path / "cli"
    r = subprocess.run([sys.executable, os.path.join(repo, "dataset", "make_shapes.py"), "--out", str(out),
                        "--train", "2", "--val", "1", "--size", "48", "--seed", "5"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith(str(out / "data.yaml"))
    assert json.load(open(out / S.MARKER))["params"] == {"version": S.GENERATOR_VERSION, "n_train": 2,
                                                         "n_val": 1, "img_size": 48, "seed": 5}



def test_cli_bad_arguments(tmp_path, capsys):
    import importlib.util
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location("make_shapes", os.path.join(repo, "dataset", "make_shapes.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--out", str(tmp_path / "x"), "--size", "8"]) == 2
    assert "img_size >= 32" in capsys.readouterr().err
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert mod.main(["--out", str(tmp_path / "mine"), "--train", "1", "--val", "1", "--size", "32"]) == 2
    assert "not made by the shapes generator" in capsys.readouterr().err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
