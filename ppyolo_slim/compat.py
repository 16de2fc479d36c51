"""Every difference between the two dependency sets this package runs on, in one place.

* default: Paddle 2.6.2, PaddleSlim 2.6.0, paddle2onnx 1.3.1, numpy 1.x;
* ``PPYOLO_SLIM_PADDLE=3`` (setup.py): Paddle 3.3, the same PaddleSlim 2.6.0, paddle2onnx 2.1, numpy 2.

Paddle 3 records programs in its new IR (PIR) by default. PaddleSlim 2.6 reads old-IR
programs: ``legacy_ir`` switches Paddle 3 back while PaddleSlim traces. Exports stay in each
Paddle's own format (``model.pdmodel`` on 2.6, PIR ``model.json`` on 3): Paddle 3.3 can no
longer trace this model into the old IR (``sigmoid(): argument (position 1) must be Value,
but got Variable``), and paddle2onnx 2.1 reads both formats through PIR anyway.
Nothing here imports paddle at module import (``ppyolo_slim._preload`` must run first).
"""
from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import json
import os
import sys
import types
import warnings
from typing import Optional


@functools.lru_cache(maxsize=None)
def paddle_major() -> int:
    import paddle
    return int(paddle.__version__.split(".")[0])


def quiet_paddle_import() -> None:
    """Paddle 3's ``import paddle`` warns "No ccache found" (paddle/utils/cpp_extension), a note
    for people compiling custom operators; we compile none, and the tools' one-line errors
    would be three. Call before paddle is imported; Paddle 2.6 never warns it."""
    warnings.filterwarnings("ignore", message="No ccache found", category=UserWarning)


def legacy_ir():
    """A context in which dygraph-to-static tracing builds old-IR programs (``ProgramDesc``).
    Paddle 3 defaults to PIR; ``paddle.pir_utils.DygraphOldIrGuard`` is what Paddle's own
    dygraph quantization uses to go back. Paddle 2.6 has only the old IR: nothing to do."""
    if paddle_major() < 3:
        return contextlib.nullcontext()
    import paddle.pir_utils
    return paddle.pir_utils.DygraphOldIrGuard()


def upsample_nearest(x, scale: int):
    """Nearest upsampling by an integer ``scale``.
    Paddle 3.3 gives ``nearest_interp`` a float64-array ``scale`` attribute (even when an output
    size is given), and two readers of the saved program reject it: paddle2onnx 2.1 ("the 0th
    elementwise MUST be ir::FloatAttribute", pir_parser.cc:814) and Paddle 3.3.1's own inference
    executor ("ConvertPirAttribute2RuntimeAttribute not support
    [pir::ArrayAttribute<pir::DoubleAttribute>]", Paddle issue #79749). So a program traced on
    Paddle 3 into PIR repeats each pixel by concatenation (the same values: pure copying);
    eager mode, old-IR traces (PaddleSlim's walker knows ``nearest_interp``) and Paddle 2.6 keep
    ``interpolate``. Concat, not expand: in onnxruntime (1 thread, [1, 128, 40, 40]) the
    6-D Expand took 4.2-5.4 ms, Unsqueeze + Concat 0.84-0.90 ms, DepthToSpace 1.26 ms."""
    import paddle
    import paddle.nn.functional as F
    if paddle_major() < 3 or not paddle.framework.in_pir_mode():   # eager, or PaddleSlim's old-IR trace
        return F.interpolate(x, scale_factor=scale, mode="nearest")
    _, c, h, w = x.shape
    if h < 0 or w < 0:
        raise ValueError(f"Upsample: tracing on Paddle 3 needs a fixed input size, got {list(x.shape)}")
    y = paddle.concat([x.unsqueeze(-1)] * scale, axis=-1).reshape([-1, c, h, w * scale])
    return paddle.concat([y.unsqueeze(3)] * scale, axis=3).reshape([-1, c, h * scale, w * scale])


def traced_cell_grid(ny: int, nx: int):
    """The Detect cell offsets (x - 0.5, y - 0.5), [1, 1, ny, nx, 2], made while tracing.
    On Paddle 3.3 a NumPy constant becomes ``assign_value_`` with a float64-array attribute,
    which its inference executor rejects (as above): build the grid from ``arange`` and
    ``meshgrid`` there. Paddle 2.6 keeps the constant it always exported."""
    import numpy as np
    import paddle
    if paddle_major() < 3 or not paddle.framework.in_pir_mode():
        yv, xv = np.meshgrid(np.arange(ny, dtype="float32"), np.arange(nx, dtype="float32"), indexing="ij")
        return paddle.to_tensor(np.stack((xv, yv), -1)[None, None] - 0.5)
    yv, xv = paddle.meshgrid(paddle.arange(ny, dtype="float32"), paddle.arange(nx, dtype="float32"))
    return (paddle.stack([xv, yv], axis=-1) - 0.5).reshape([1, 1, ny, nx, 2])


def enable_inference_memory_optim(config) -> None:
    """``Config.enable_memory_optim()``, where it works. On Paddle 3.3.1 with a PIR program,
    ``create_predictor`` then fails ("Expected map.count(predictor_id) &&
    map[predictor_id].count(pass_name)", pass_result_info.h:48): skip it there."""
    if paddle_major() < 3:
        config.enable_memory_optim()


def imdecode_color(data, path: str):
    """``cv2.imdecode(data, cv2.IMREAD_COLOR)`` (BGR), or None. OpenCV 5 (the Paddle 3 set's:
    numpy 2 builds) gives None for a JPEG cut short ("Premature end of JPEG file"), where
    OpenCV 4's imdecode, and OpenCV 5's own ``imread``, decode what is there. The data check
    warns about such a file and the training loader (``imread``) uses it; inference must not
    skip it on one set only, so on OpenCV >= 5 a refused buffer is read again with ``imread``."""
    import cv2
    img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if img is None and int(cv2.__version__.split(".")[0]) >= 5:
        img = cv2.imread(path, cv2.IMREAD_COLOR)
    return img


def int8_unsupported() -> Optional[str]:
    """Why INT8 quantization (``slim/quant.py``) cannot run on this Paddle, or None where it can.
    Both sets run it now (Paddle 3 through ``int8_via_pir``); kept as the one place that would
    say so if a set lost it (tools/quant.py and the pipeline ask it before any work)."""
    return None


def int8_via_pir() -> bool:
    """Whether INT8 goes through ``slim/quant_pir.py`` (Paddle 3) instead of PaddleSlim's
    old-IR route (Paddle 2.6). PaddleSlim 2.6's ``quant_post_static`` and its dygraph QAT's
    ``save_quantized_model``, our ProgramDesc edits (``slim/quant_program.py``) and paddle2onnx
    1.3.1's QDQ output all need ``model.pdmodel``, and Paddle 3.3 cannot trace this model into
    the old IR ("sigmoid(): argument (position 1) must be Value, but got Variable"). Paddle 3's
    own quantized programs do not get through either (measured on 3.3.1 / paddle2onnx 2.1.0):
    the PIR executor and Paddle Inference run ``dequantize_linear`` as a quantize, Paddle
    Inference deletes Q/DQ pairs even with IR optimization off, and paddle2onnx 2.1 converts
    ``quantize_linear``/``dequantize_linear`` only as FP8. So on Paddle 3 the calibration is
    ``paddle.quantization.PTQ`` (QAT: PaddleSlim's training wrapper, which runs on 3.3), the
    Paddle INT8 model uses the fused fake-quant op that does run, and the Q/DQ go into
    paddle2onnx's float ONNX from the same scales (quant_pir.py says how)."""
    return paddle_major() >= 3


# ---- exported inference programs -----------------------------------------------------------

OLD_IR_MODEL = "model.pdmodel"   # paddle.jit.save on Paddle 2.6: a ProgramDesc protobuf
PIR_MODEL = "model.json"         # paddle.jit.save on Paddle 3 (PIR): a JSON program
MODEL_FILES = (OLD_IR_MODEL, PIR_MODEL)


def program_file(folder: str) -> str:
    """The program file of an export folder, whichever format it holds (the first of
    ``MODEL_FILES`` when it holds none, for the caller's "missing" message)."""
    found = [n for n in MODEL_FILES if os.path.isfile(os.path.join(folder, n))]
    return os.path.join(folder, found[0] if found else MODEL_FILES[0])


def saved_model_file() -> str:
    """The program file name ``paddle.jit.save(layer, "<dir>/model")`` writes on this Paddle."""
    return OLD_IR_MODEL if paddle_major() < 3 else PIR_MODEL


def saved_output_name(model_file: str) -> Optional[str]:
    """The fetch target of a saved inference program (what Paddle Inference calls the
    output), read from either format; None when the program has no fetch op."""
    if model_file.endswith(".json"):
        with open(model_file, "r", encoding="utf-8") as f:
            program = json.load(f)["program"]
        for region in program["regions"]:
            for block in region["blocks"]:
                for op in block["ops"]:
                    if op.get("#", "").endswith(".fetch"):
                        attrs = {a["N"]: a["AT"].get("D") for a in op.get("A", [])}
                        return attrs.get("name")
        return None
    from paddle.base.proto import framework_pb2
    with open(model_file, "rb") as f:
        prog = framework_pb2.ProgramDesc.FromString(f.read())
    for op in prog.blocks[0].ops:
        if op.type == "fetch":
            return list(op.inputs[0].arguments)[0]
    return None


def extract_onnx(model, input_names, output_names):
    """``onnx.utils.Extractor(model).extract_model(inputs, outputs)``. onnx <= 1.17 (paddle2onnx
    2.1 pins it) looks the new inputs up in ``value_info`` only, so a graph output cannot become
    an input of the extracted part (``KeyError: 'output0'``); later onnx also looks in the
    graph's inputs and outputs. Give the old one those too."""
    import onnx.utils
    ex = onnx.utils.Extractor(model)
    if hasattr(ex, "vimap"):   # onnx <= 1.17; later versions call it value_infos and fill it
        for v in list(ex.graph.input) + list(ex.graph.output):
            ex.vimap.setdefault(v.name, v)
    return ex.extract_model(list(input_names), list(output_names))


# ---- PaddleSlim 2.6 -------------------------------------------------------------------------

def _install_pkg_resources_stand_in() -> None:
    """``paddleslim/common/load_model.py`` does ``import pkg_resources`` at import time (only
    for ``pkg_resources.require('onnx')`` in ``load_onnx_model``, which we never use);
    setuptools >= 81 no longer ships it. When it is missing, register a stand-in whose
    ``require`` checks installed distributions through ``importlib.metadata``."""
    try:
        import pkg_resources  # noqa: F401
        return
    except ImportError:
        pass
    mod = types.ModuleType("pkg_resources")
    mod.__doc__ = "ppyolo_slim stand-in: only require() for PaddleSlim's import"

    def require(*requirements):
        for r in requirements:
            name = str(r).split(";")[0].strip()
            for sep in ("==", ">=", "<=", "~=", "!=", ">", "<"):
                name = name.split(sep)[0]
            importlib.metadata.distribution(name.strip())   # raises PackageNotFoundError
        return []

    mod.require = require
    sys.modules["pkg_resources"] = mod


def _fit_paddleslim_to_paddle3() -> None:
    """PaddleSlim 2.6 traces a dygraph model in ``paddleslim.core.dygraph._dy2prog``:
    * it enters ``paddle.base.dygraph.base._to_static_mode_guard_``, which Paddle 3 renamed
      ``to_static_mode_guard`` (same body): alias the old name;
    * its graph walker reads an old-IR ``Program``: run the tracing under ``legacy_ir``."""
    import paddle.base.dygraph.base as dy_base
    import paddleslim.core.dygraph as slim_dy
    if not hasattr(dy_base, "_to_static_mode_guard_"):
        dy_base._to_static_mode_guard_ = dy_base.to_static_mode_guard
    trace = slim_dy._dy2prog
    if getattr(trace, "_ppyolo_slim_legacy_ir", False):
        return

    @functools.wraps(trace)
    def traced_in_legacy_ir(*args, **kw):
        with legacy_ir():
            return trace(*args, **kw)

    traced_in_legacy_ir._ppyolo_slim_legacy_ir = True
    slim_dy._dy2prog = traced_in_legacy_ir


def import_paddleslim():
    """``paddleslim``, importable whatever setuptools is installed, fitted to Paddle 3 if needed."""
    _install_pkg_resources_stand_in()
    with warnings.catch_warnings():
        # paddleslim.analysis imports pip, which makes setuptools announce it replaces distutils
        warnings.filterwarnings("ignore", message="Setuptools is replacing distutils")
        try:
            import paddleslim
        except ModuleNotFoundError as e:
            if e.name != "paddleslim":
                raise
            raise ModuleNotFoundError(
                "PaddleSlim is not installed; pruning needs paddleslim==2.6.0: on Paddle 3 "
                "`pip install --no-deps paddleslim==2.6.0` (the second step of the README's install: "
                "its OpenCV pin needs numpy 1.x), on Paddle 2.6 `pip install paddleslim==2.6.0`",
                name="paddleslim") from None
    if paddle_major() >= 3:
        _fit_paddleslim_to_paddle3()
    return paddleslim
