"""Shared fixtures: a tiny generated data set (the embedded generator, small parameters)."""
import os

import pytest

import ppyolo_slim  # noqa: F401  (import order, STACK.md trap 2)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A 16/8-image shapes set at 96 px: its data YAML path."""
    from ppyolo_slim.data.shapes import generate_shapes
    root = tmp_path_factory.mktemp("tiny_shapes")
    return generate_shapes(str(root), n_train=16, n_val=8, img_size=96, seed=1, verbose=False)


def tiny_train_overrides(data_yaml, out_dir, **extra):
    o = {"data": data_yaml, "output_dir": str(out_dir), "epochs": 2, "img_size": 64, "batch_size": 8,
         "eval.interval": 1, "workers": 0, "log.images": 2, "log.interval": 1,
         "schedule.warmup_epochs": 0.0}
    o.update(extra)
    return [f"{k}={v}" for k, v in o.items()]
