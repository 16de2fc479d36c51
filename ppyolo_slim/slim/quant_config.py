"""The ``quant:`` config section (quant.py, tools/quant.py use it). Apart from quant.py so that
composing a config imports no paddle."""
from __future__ import annotations

from typing import List

from ..settings import AT_LEAST_1, Section, between, one_of, section, setting

ALGOS = ("KL", "hist", "avg", "mse", "abs_max")    # PTQ calibration algorithms


@section("quant")
class QuantConfig(Section):
    qat: bool = setting(False)          # the trainer wraps the model in PaddleSlim's QAT (tools/quant.py --method qat)
    algo: str = setting("mse", one_of(*ALGOS))   # mse measured best: benchmarks/README.md
    hist_percent: float = setting(0.9999, between(0, 1, lo_open=True))   # the hist algorithm's percentile
    calib_images: int = setting(64, AT_LEAST_1)   # training images for PTQ calibration
    calib_batch: int = setting(8, AT_LEAST_1)
    check_images: int = setting(16, AT_LEAST_1)   # val images of the onnxruntime vs Paddle INT8 check
    # convs kept float: structured names (model.2.cv1) or 'detect'
    float_layers: List[str] = setting([], (lambda v: all(isinstance(x, str) and x for x in v),
                                           "a list of layer names"))
    moving_rate: float = setting(0.9, between(0, 1, lo_open=True, hi_open=True))   # QAT activation scales
