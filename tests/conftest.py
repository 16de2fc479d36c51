"""Shared fixtures: a tiny generated data set (the embedded generator, small parameters), tiny
random weights, and helpers for training overrides, tools and uneven-width models."""
import dataclasses
import importlib.util
import os

import numpy as np
import pytest

import ppyolo_slim  # noqa: F401  (import order: before paddle)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A 16/8-image shapes set at 96 px: its data YAML path."""
    from ppyolo_slim.data.shapes import generate_shapes
    root = tmp_path_factory.mktemp("tiny_shapes")
    return generate_shapes(str(root), n_train=16, n_val=8, img_size=96, seed=1, verbose=False)


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    """A random-weight yolov5n with nc=2 (red, green), saved: its .pdparams path."""
    from ppyolo_slim.model import ModelMeta, build_model, save_weights
    meta = ModelMeta(nc=2, names=["red", "green"], img_size=64)
    path = str(tmp_path_factory.mktemp("w") / "tiny.pdparams")
    save_weights(path, build_model(meta).state_dict(), meta)
    return path


# tools/quant.py on tiny models (tests/test_quant.py, tests/test_deploy_qdq.py, tests/test_deploy_api.py)
QUANT_TINY = ["img_size=64", "quant.algo=hist", "quant.calib_images=8", "quant.calib_batch=4",
              "quant.check_images=4", "workers=0", "log.images=0", "eval.batch_size=8"]


def quant_tiny_opts(data, *extra):
    return [f"data={data}"] + QUANT_TINY + list(extra)


@pytest.fixture(scope="session")
def tiny5_weights(tiny_data, tmp_path_factory):
    """A random-weight yolov5n for the tiny set's classes, saved: its .pdparams path."""
    from ppyolo_slim.data import load_data
    from ppyolo_slim.model import ModelMeta, build_model, save_weights
    import paddle
    names = list(load_data(tiny_data, verbose=False).names)
    meta = ModelMeta(nc=len(names), names=names, img_size=64)
    paddle.seed(5)      # the same model every run: the INT8 figures tests compare are then reproducible
    path = str(tmp_path_factory.mktemp("w5") / "tiny5.pdparams")
    save_weights(path, build_model(meta).state_dict(), meta)
    return path


@pytest.fixture(scope="session")
def ptq_dir(tiny_data, tiny5_weights, tmp_path_factory):
    """tools/quant.py --method ptq of tiny5_weights: the output folder (read only)."""
    from ppyolo_slim.compat import int8_unsupported
    if int8_unsupported() is not None:     # a set without INT8 (none at present)
        pytest.skip(str(int8_unsupported()))
    out = str(tmp_path_factory.mktemp("ptq") / "int8")
    rc = load_tool("quant").main(["-c", "configs/quant.yml", "--weights", tiny5_weights, "--method", "ptq",
                                  "--output", out, "-o"] + quant_tiny_opts(tiny_data))
    assert rc == 0
    return out


def tiny_train_overrides(data_yaml, out_dir, **extra):
    o = {"data": data_yaml, "output_dir": str(out_dir), "epochs": 2, "img_size": 64, "batch_size": 8,
         "eval.interval": 1, "workers": 0, "log.images": 2, "log.interval": 1,
         "schedule.warmup_epochs": 0.0}
    o.update(extra)
    return [f"{k}={v}" for k, v in o.items()]


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_tool(name):
    """tools/<name>.py as a module (tools/ holds scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"_tool_{name}", os.path.join(ROOT, "tools", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def uneven_model(nc=3, seed=0):
    """A YOLOv5n whose widths are no multiple of anything, as a pruned one's would be, with
    random BN statistics and scales so BN matters."""
    import paddle.nn as nn
    from ppyolo_slim.model import expand_scale
    from ppyolo_slim.model.yolo import YOLOv5
    net = expand_scale("n", nc=nc)
    rng = np.random.default_rng(seed)
    net.layers = [dataclasses.replace(L, out_channels=max(5, L.out_channels - int(rng.integers(1, 7))))
                  if L.out_channels else L for L in net.layers]
    model = YOLOv5(net)
    for layer in model.sublayers():
        if isinstance(layer, nn.BatchNorm2D):
            c = layer.weight.shape[0]
            layer._mean.set_value(rng.normal(0, 0.1, c).astype("float32"))
            layer._variance.set_value(rng.uniform(0.5, 1.5, c).astype("float32"))
            layer.weight.set_value(rng.uniform(0.5, 1.5, c).astype("float32"))
    return model
