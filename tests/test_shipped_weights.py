"""The checkpoint shipped in weights/: it loads, and its val mAP on the embedded set is the figure
recorded beside it (weights/yolov5n_shapes_160.json, written when it was trained)."""
import json
import os

import pytest

import ppyolo_slim
from ppyolo_slim.config import REPO_ROOT

WEIGHTS = os.path.join(REPO_ROOT, "weights", "yolov5n_shapes_160.pdparams")
RECORD = os.path.join(REPO_ROOT, "weights", "yolov5n_shapes_160.json")


def test_shipped_checkpoint_reaches_its_recorded_map():
    from ppyolo_slim.config import load_config
    from ppyolo_slim.slim.workflow import val_evaluator
    with open(RECORD) as f:
        rec = json.load(f)
    model = ppyolo_slim.load_model(WEIGHTS)
    assert model.meta.names == ["circle", "square", "triangle", "star", "cross"]
    assert model.meta.img_size == rec["img_size"] == 160
    cfg = load_config("configs/base.yml", [f"img_size={rec['img_size']}"])
    m = val_evaluator(cfg)(model)
    # the same CPU kernels give the same figure; other machines' float rounding moves it a little
    assert m["map50_95"] == pytest.approx(rec["val_map50_95"], abs=0.005)
    assert m["map50"] == pytest.approx(rec["val_map50"], abs=0.005)


def test_default_configs_start_from_it():
    from ppyolo_slim.config import load_config
    assert load_config("configs/sparse.yml")["weights"] in ("weights/yolov5n_shapes_160.pdparams", WEIGHTS)
    os.chdir(os.path.dirname(REPO_ROOT))     # from another folder it still resolves to the repo's file
    try:
        assert load_config("configs/sparse.yml")["weights"] == WEIGHTS
        assert load_config("configs/finetune.yml")["distill"]["teacher"] == WEIGHTS
        assert load_config("configs/sparse.yml", ["weights=null"])["weights"] is None  # from scratch
    finally:
        os.chdir(REPO_ROOT)
