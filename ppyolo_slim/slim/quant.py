"""INT8 with PaddleSlim: post-training quantization (PTQ) and the quantization-aware
training (QAT) hook of the trainer, and the INT8 export both end in.

PTQ: the FP32 model is saved by paddle.jit.save with SiLU written as ``x * sigmoid(x)``
(the same function; see ``explicit_silu``), calibrated by
``paddleslim.quant.quant_post_static`` on training images letterboxed by the project's own
data set code, with BN folded into the convs first (``optimize_model``) so the per-channel
weight scales are those of the weights that run. Quantized: every conv's input and weights,
and each SiLU's input, sigmoid and output. The Detect convs' outputs and the box decode stay
float (quant_program.py). QAT: BN is folded into the convs (model/fold.py), then
``paddleslim.QAT`` wraps the model inside the trainer (``wrap_for_qat``); its export goes
through the same program and ONNX edits. (Unfolded, paddle2onnx wrote every conv of a QAT
program as a float Conv: it needs the scale of the tensor the conv really outputs, and the
conv's observer sat before the BN.)

Output folder: ``model.pdmodel`` + ``model.pdiparams`` (the Paddle Inference INT8 model,
quantize/dequantize ops), ``model_int8.onnx`` (QDQ, for onnxruntime), ``infer_cfg.yml``,
``quant_report.json``.

That is the Paddle 2.6 route. On Paddle 3 (``compat.int8_via_pir``) ``ptq`` and ``qat_export``
hand over to quant_pir.py after the shared steps (calibration images, the FP32 reference
export): ``model.json`` is a fake-quantized program there, and ``model_int8.onnx`` is built
from paddle2onnx's float ONNX and the calibrated scales; the check, report and folder are
the same.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

ONNX_INT8 = "model_int8.onnx"
REPORT = "quant_report.json"
# ops whose inputs PTQ quantizes: convs, and SiLU written as sigmoid and mul
PTQ_OPS = ["conv2d", "depthwise_conv2d", "sigmoid", "elementwise_mul"]
from .quant_base import QuantError, explicit_silu, float_convs, in_float_layers  # noqa: E402,F401  (shared with quant_pir.py)


def int8_via_pir() -> bool:
    from ..compat import int8_via_pir as via_pir
    return via_pir()


def require_int8_support() -> None:
    """QuantError, before any work, on a Paddle where INT8 cannot run (compat.int8_unsupported)."""
    from ..compat import int8_unsupported
    why = int8_unsupported()
    if why:
        raise QuantError(why)


# ------------------------------------------------------------------------------ calibration

def calibration_records(data: str, n: int, seed: int = 0, log: Callable[[str], None] = print):
    """``n`` training records spread over the split. ``load_data`` checks every image as
    training does: unreadable ones are reported there and never reach the calibration."""
    from ..data import load_data
    spec = load_data(data)
    train = list(spec.train)
    if n < 1:
        raise QuantError(f"quant.calib_images must be >= 1, got {n}")
    if len(train) > n:
        idx = np.random.default_rng(seed).choice(len(train), n, replace=False)
        train = [train[i] for i in sorted(idx)]
    skipped = [i for i in spec.report.issues if "image skipped" in i.reason]
    log(f"calibration: {len(train)} training images of {spec.source}"
        + (f" ({len(skipped)} unusable images reported and skipped by the data check: "
           f"{', '.join(os.path.basename(i.file) for i in skipped[:5])})" if skipped else ""))
    return spec, train


def calibration_batches(records, img_size: int, nc: int, batch: int,
                        log: Callable[[str], None] = print) -> List[np.ndarray]:
    """Letterboxed float32 [B,3,S,S] batches. An image that cannot be read any more (changed
    since the data check) is reported and skipped."""
    from ..data import DataError, DetectionDataset
    ds = DetectionDataset(records, img_size, nc, augment=None)
    imgs, bad = [], []
    for i in range(len(ds)):
        try:
            imgs.append(ds[i][0])
        except DataError as e:
            bad.append(str(e))
            log(f"calibration: skip {e}")
    if not imgs:
        raise QuantError("no calibration image could be read" + (f" ({bad[0]})" if bad else ""))
    return [np.stack(imgs[i:i + batch]) for i in range(0, len(imgs), batch)]


def _paddle_loader(batches: Sequence[np.ndarray], feed_name: str):
    """Paddle 2.6's PostTrainingQuantization accepts only a paddle.io.DataLoader, which it
    calls and whose items it feeds to the executor."""
    import paddle

    class _Batches(paddle.io.DataLoader):
        def __init__(self):   # no dataset, no workers: the batches are already made
            pass

        def __call__(self):
            return iter([{feed_name: b} for b in batches])

        def __len__(self):
            return len(batches)
    return _Batches()


# ------------------------------------------------------------------------------ export helpers

def float_layer_weights(fp32_dir: str, float_layers: Sequence[str]) -> List[str]:
    """Parameter names of the conv weights of ``float_layers`` (structured prefixes such as
    ``model.24.m.0`` or ``model.2``; ``detect`` means the Detect convs), for PTQ's skip list."""
    from .quant_program import CONV_OPS, _args, _read, structured_names
    names = structured_names(fp32_dir)
    filters = [_args(op, "Filter")[0] for op in _read(fp32_dir).blocks[0].ops if op.type in CONV_OPS]
    conv = {f: names.get(f, f)[:-len(".weight")] for f in filters}      # param -> layer name
    floats = float_convs(list(conv.values()), float_layers)
    return sorted(p for p, v in conv.items() if v in floats)


def _paddle_predictor(model_dir: str, fake_quant: bool):
    """Paddle Inference on CPU. ``fake_quant``: run the program's ops as written, no IR passes,
    the reference semantics of the quantized program."""
    import paddle.inference as pi
    from ..compat import program_file
    cfg = pi.Config(program_file(model_dir), os.path.join(model_dir, "model.pdiparams"))
    cfg.disable_gpu()
    cfg.disable_glog_info()
    cfg.switch_ir_optim(not fake_quant)
    pred = pi.create_predictor(cfg)
    name = pred.get_input_names()[0]

    def run(x: np.ndarray) -> np.ndarray:
        h = pred.get_input_handle(name)
        h.reshape(list(x.shape))
        h.copy_from_cpu(np.ascontiguousarray(x, np.float32))
        pred.run()
        return np.asarray(pred.get_output_handle(pred.get_output_names()[0]).copy_to_cpu())
    return run


def _ort_session(onnx_path: str, optimize: bool = True, threads: int = 0):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    return lambda x: s.run(None, {name: np.ascontiguousarray(x, np.float32)})[0]


# ------------------------------------------------------------------------------ the check

CHECK_QUANTILES = (0.5, 0.99)
CHECK_FACTOR = 1.5


def _quantiles(a: np.ndarray, b: np.ndarray) -> Dict[str, Dict[str, float]]:
    d = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
    d = np.where(np.isfinite(d), d, np.inf)
    return {part: {f"q{q}": float(np.quantile(x, q)) for q in CHECK_QUANTILES} | {"max": float(x.max())}
            for part, x in (("box_px", d[..., :4]), ("score", d[..., 4:]))}


def check_int8(folder: str, fp32_onnx: str, images: Sequence[np.ndarray], factor: float = CHECK_FACTOR,
               log: Callable[[str], None] = print) -> Dict[str, Any]:
    """onnxruntime on ``model_int8.onnx`` against the fake-quantized Paddle program (Paddle
    Inference running its quantize/dequantize ops as written), on real letterboxed images.

    The tolerance is the quantization's own effect: INT8 moves the outputs away from FP32,
    and the two INT8 runtimes may not differ from each other by more than ``factor`` x that,
    at the median and the 99th percentile, for boxes and scores. They cannot agree exactly:
    a value within float rounding of a rounding boundary lands one step apart in the two
    (onnxruntime's integer kernels requantize in fixed point) and the step travels through
    the layers after it; paddle2onnx also stores conv biases as int32 on the input x weight
    scale grid. A conversion error does not stay inside that bound: the scale of a BN-folded
    conv taken from the unfolded tensor (a paddle2onnx behaviour this module works around) put
    the 99th-percentile box difference at 3.7x the quantization's own (20.3 against 5.5 px)."""
    ref_fn = _paddle_predictor(folder, fake_quant=True)
    ort_fn = _ort_session(os.path.join(folder, ONNX_INT8))
    fp_fn = _ort_session(fp32_onnx)
    ref = np.concatenate([ref_fn(x) for x in images])
    out = np.concatenate([ort_fn(x) for x in images])
    fp = np.concatenate([fp_fn(x) for x in images])
    if out.shape != ref.shape:
        raise QuantError(f"{ONNX_INT8}: output shape {list(out.shape)}, the Paddle INT8 model gives "
                         f"{list(ref.shape)}")
    if not np.isfinite(out).all():
        raise QuantError(f"{ONNX_INT8}: output holds NaN or inf")
    int8_vs_fp32 = _quantiles(ref, fp)
    ort_vs_paddle = _quantiles(out, ref)
    failures = []
    for part in ("box_px", "score"):
        for q in CHECK_QUANTILES:
            k = f"q{q}"
            allowed = factor * int8_vs_fp32[part][k] + (1e-3 if part == "score" else 0.05)   # float floor
            if ort_vs_paddle[part][k] > allowed:
                failures.append(f"{part} {k}: {ort_vs_paddle[part][k]:.4g} > {allowed:.4g}")
    rep = {"images": int(ref.shape[0]), "factor": factor, "paddle_int8_vs_fp32": int8_vs_fp32,
           "ort_int8_vs_paddle_int8": ort_vs_paddle, "passed": not failures}
    log(f"check: onnxruntime INT8 vs Paddle INT8 boxes median {ort_vs_paddle['box_px']['q0.5']:.3g} px, "
        f"p99 {ort_vs_paddle['box_px']['q0.99']:.3g} px (INT8 vs FP32: {int8_vs_fp32['box_px']['q0.5']:.3g}, "
        f"{int8_vs_fp32['box_px']['q0.99']:.3g}); scores median {ort_vs_paddle['score']['q0.5']:.3g}, "
        f"p99 {ort_vs_paddle['score']['q0.99']:.3g} (INT8 vs FP32: {int8_vs_fp32['score']['q0.5']:.3g}, "
        f"{int8_vs_fp32['score']['q0.99']:.3g}): {'ok' if not failures else 'DIFFERENT'}")
    if failures:
        raise QuantError(f"{ONNX_INT8} does not compute what the Paddle INT8 model does (allowed: "
                         f"{factor} x the INT8-vs-FP32 difference): " + "; ".join(failures))
    return rep


# ------------------------------------------------------------------------------ the INT8 export

def int8_onnx(model_dir: str, opset: int = 13, log: Callable[[str], None] = print,
              edit_decode: bool = True) -> Dict[str, Any]:
    """paddle2onnx (deploy_backend='onnxruntime') of the quantized program, then the graph
    edits of quant_onnx.py; writes ``model_dir/model_int8.onnx``. Returns what ended quantized."""
    import onnx
    import paddle2onnx
    from . import quant_onnx as Q
    try:
        data = paddle2onnx.export(os.path.join(model_dir, "model.pdmodel"), os.path.join(model_dir, "model.pdiparams"),
                                  save_file=None, opset_version=int(opset), auto_upgrade_opset=False, verbose=False,
                                  enable_onnx_checker=True, deploy_backend="onnxruntime")
    except Exception as e:
        raise QuantError(f"paddle2onnx {paddle2onnx.__version__} could not convert {model_dir}: {e}") from None
    model = onnx.load_from_string(data)
    edits = {"activations_to_uint8": Q.activations_to_uint8(model),
             "decode_pairs_removed": Q.float_decode(model) if edit_decode else 0,
             "float_conv_inputs": Q.float_conv_inputs(model)}
    data = model.SerializeToString()
    with open(os.path.join(model_dir, ONNX_INT8), "wb") as f:
        f.write(data)
    ops = Q.quantized_op_counts(model)
    fused = Q.ort_fused_op_counts(data)
    _log_fused(f"paddle2onnx: {ONNX_INT8}", fused, log)
    return {"edits": edits, "quantized_inputs_by_op": ops, "onnxruntime_ops": fused}


def _log_fused(what: str, fused: Dict[str, int], log: Callable[[str], None]) -> None:
    log(f"{what}; onnxruntime runs {fused.get('QLinearConv', 0)} QLinearConv, "
        f"{fused.get('QLinearSigmoid', 0)} QLinearSigmoid, {fused.get('QLinearMul', 0)} QLinearMul, "
        f"{fused.get('QLinearAdd', 0)} QLinearAdd, {fused.get('QLinearConcat', 0)} QLinearConcat; "
        f"float: {fused.get('Conv', 0)} Conv, {fused.get('Sigmoid', 0)} Sigmoid, {fused.get('Mul', 0)} Mul")


def _write_cfg(fp32_dir: str, out_dir: str, extra: Dict[str, Any]) -> None:
    from ..export.inference_cfg import CFG_NAME, dump_infer_cfg, read_infer_cfg
    cfg = read_infer_cfg(fp32_dir)
    cfg["onnx_file"] = ONNX_INT8
    cfg["quantization"] = extra
    cfg["output"]["onnx"] = {"output0": {"kind": "raw", "shape": cfg["output"]["paddle"]["shape"]}}
    with open(os.path.join(out_dir, CFG_NAME), "wb") as f:
        f.write(dump_infer_cfg(cfg))


def _publish(tmp: str, output: str) -> None:
    if os.path.isdir(output):
        for name in sorted(os.listdir(tmp), key=lambda n: n == REPORT):   # the report last
            os.replace(os.path.join(tmp, name), os.path.join(output, name))
    else:
        os.rename(tmp, output)


def finish_int8(qdir: str, fp32_dir: str, output: str, check_images: Sequence[np.ndarray],
                report: Dict[str, Any], opset: int, log: Callable[[str], None],
                sensitivity: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Program edits, ONNX, check, infer_cfg and report for a quantized program in ``qdir``;
    ``sensitivity`` ({data, img_size, limit}): also the per-part study (sensitivity.json)."""
    from .quant_program import float_conv_inputs, quantized_convs, remove_pairs
    decode_q = None
    if sensitivity is not None:   # the same program with the decode quantized, for comparison
        decode_q = qdir + "_decode_int8"
        shutil.copytree(qdir, decode_q)
        remove_pairs(decode_q, observers=True, decode=False)
        float_conv_inputs(decode_q)
        int8_onnx(decode_q, opset, log=lambda m: None, edit_decode=False)
    report["program_edits"] = remove_pairs(qdir)
    report["program_edits"]["float_conv_inputs"] = float_conv_inputs(qdir)
    q, fl = quantized_convs(qdir)
    report["paddle_int8"] = {"quantized_convs": len(q), "float_convs": len(fl)}
    log(f"Paddle INT8 program: {len(q)} quantized convs, {len(fl)} float; removed "
        f"{report['program_edits']['observers']} conv-output observers and "
        f"{report['program_edits']['decode']} quantize pairs of the decode")
    report["onnx"] = int8_onnx(qdir, opset, log)
    sens_args = None
    if sensitivity is not None:
        from .quant_sensitivity import layer_names
        sens_args = dict(sensitivity, names=layer_names(fp32_dir), decode_int8_onnx=os.path.join(decode_q, ONNX_INT8))
    return _check_and_publish(qdir, fp32_dir, output, check_images, report, len(q), log, sens_args)


def _check_and_publish(qdir: str, fp32_dir: str, output: str, check_images: Sequence[np.ndarray],
                       report: Dict[str, Any], quantized_convs: int, log: Callable[[str], None],
                       sensitivity: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The part of the INT8 export both routes share: the ONNX's integer convs counted against
    the Paddle program's, check_int8, the sensitivity study if asked, infer_cfg, report, publish."""
    from ..utils.io import dumps
    onnx_q = report["onnx"]["quantized_inputs_by_op"].get("Conv", {}).get("quantized_inputs", 0)
    if onnx_q != quantized_convs:   # the check below would pass a float ONNX: it compares outputs only
        raise QuantError(f"{ONNX_INT8}: {onnx_q} convs read quantized inputs, the Paddle INT8 program has "
                         f"{quantized_convs} quantized convs; paddle2onnx dropped the quantization")
    report["check"] = check_int8(qdir, os.path.join(fp32_dir, "model.onnx"), check_images, log=log)
    if sensitivity is not None:
        from .quant_sensitivity import sensitivity as study
        sens = study(os.path.join(qdir, ONNX_INT8), os.path.join(fp32_dir, "model.onnx"), sensitivity["data"],
                     int(sensitivity["img_size"]), sensitivity["names"],
                     decode_int8_onnx=sensitivity.get("decode_int8_onnx"), limit=sensitivity.get("limit"), log=log)
        with open(os.path.join(qdir, "sensitivity.json"), "w", encoding="utf-8") as f:
            f.write(dumps(sens))
        report["sensitivity"] = {k: v for k, v in sens.items() if k != "float_parts"}
        report["sensitivity"]["top_float_parts"] = sens["float_parts"][:5]
    _write_cfg(fp32_dir, qdir, {"method": report["method"], "algo": report.get("algo"),
                                "weights": "int8 per channel", "activations": "int8 per tensor"})
    with open(os.path.join(qdir, REPORT), "w", encoding="utf-8") as f:
        f.write(dumps(report))
    _publish(qdir, output)
    report["output"] = output
    return report


def finish_int8_pir(qdir: str, fp32_dir: str, output: str, check_images: Sequence[np.ndarray],
                    report: Dict[str, Any], plans, float_onnx_data: bytes, log: Callable[[str], None],
                    sensitivity: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Paddle 3 (compat.int8_via_pir): ``model_int8.onnx`` from paddle2onnx's float ONNX and the
    plan's scales (quant_pir.qdq_onnx); the fake-quantized Paddle program is already in ``qdir``."""
    from . import quant_onnx as Q
    from . import quant_pir as P
    q, fl = P.quantized_counts(plans)
    report["paddle_int8"] = {"quantized_convs": len(q), "float_convs": len(fl)}
    log(f"Paddle INT8 program: {len(q)} quantized convs, {len(fl)} float")
    model = P.qdq_onnx(float_onnx_data, plans)
    data = model.SerializeToString()
    with open(os.path.join(qdir, ONNX_INT8), "wb") as f:
        f.write(data)
    fused = Q.ort_fused_op_counts(data)
    _log_fused(f"Q/DQ from the calibrated scales into paddle2onnx's float ONNX: {ONNX_INT8}", fused, log)
    report["onnx"] = {"edits": {"qdq_pairs_inserted": sum(n.op_type == "QuantizeLinear" for n in model.graph.node)},
                      "quantized_inputs_by_op": Q.quantized_op_counts(model), "onnxruntime_ops": fused}
    sens_args = None
    if sensitivity is not None:   # the decode-in-INT8 comparison needs the 2.6 route's program edits
        sens_args = dict(sensitivity, names={p.onnx_output: p.layer for p in plans if p.onnx_output})
    return _check_and_publish(qdir, fp32_dir, output, check_images, report, len(q), log, sens_args)


def export_fp32(model, meta, folder: str, img_size: int, log: Callable[[str], None]) -> None:
    """jit.save (explicit SiLU, dynamic batch) + float model.onnx + infer_cfg into ``folder``."""
    from ..export.exporter import export_layer
    with explicit_silu():
        export_layer(model, meta, folder, img_size=img_size, batch=None, onnx=True, check=False,
                     log=lambda m: None)
    log(f"FP32 model saved for calibration: {folder}")


def ptq(weights: str, output: str, cfg, log: Callable[[str], None] = print,
        sensitivity: bool = False) -> Dict[str, Any]:
    """Post-training quantization of ``weights`` into the folder ``output``; ``sensitivity``:
    also the per-part study (quant_sensitivity.py) into ``output/sensitivity.json``."""
    import paddle
    from .. import load_model
    require_int8_support()
    q = cfg["quant"]
    algo = q["algo"]   # checked once, with the section (quant_config.py)
    img_size = int(cfg["img_size"])
    model = load_model(weights)
    spec, records = calibration_records(cfg["data"], int(q["calib_images"]), int(cfg["seed"]), log)
    if list(spec.names) != list(model.meta.names):
        log(f"warning: the data's classes {list(spec.names)} differ from the model's {list(model.meta.names)}")
    batches = calibration_batches(records, img_size, len(spec.names), int(q["calib_batch"]), log)
    check_images = calibration_batches(spec.val[:int(q["check_images"])], img_size, len(spec.names), 8, log)
    output = os.path.abspath(output)
    parent = os.path.dirname(output)
    os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(prefix=f".{os.path.basename(output)}.quant-", dir=parent)
    t0 = time.time()
    try:
        fp32_dir, qdir = os.path.join(work, "fp32"), os.path.join(work, "int8")
        export_fp32(model, model.meta, fp32_dir, img_size, log)
        report = {"method": "ptq", "algo": algo, "weights": os.path.abspath(weights), "img_size": img_size,
                  "calibration_images": int(sum(len(b) for b in batches)), "float_layers": list(q["float_layers"]),
                  "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        sens = {"data": cfg["data"], "img_size": img_size} if sensitivity else None
        if int8_via_pir():
            plans, float_data = _ptq_pir(weights, q, batches, work, qdir, img_size, int(cfg["export"]["opset"]))
            log(f"paddle.quantization PTQ, algo {algo}: {sum(len(b) for b in batches)} images in "
                f"{time.time() - t0:.1f} s")
            return finish_int8_pir(qdir, fp32_dir, output, check_images, report, plans, float_data, log, sens)
        skip = float_layer_weights(fp32_dir, q["float_layers"])
        from paddleslim.quant import quant_post_static
        paddle.enable_static()
        try:
            exe = paddle.static.Executor(paddle.CPUPlace())
            with _quiet(), _calibration_errors(algo):
                quant_post_static(exe, fp32_dir, qdir, data_loader=_paddle_loader(batches, "images"),
                                  model_filename="model.pdmodel", params_filename="model.pdiparams",
                                  batch_size=int(q["calib_batch"]), batch_nums=len(batches), algo=algo,
                                  hist_percent=float(q["hist_percent"]), quantizable_op_type=list(PTQ_OPS),
                                  onnx_format=True, optimize_model=True, skip_tensor_list=skip or None,
                                  weight_quantize_type="channel_wise_abs_max")
        finally:
            paddle.disable_static()
        log(f"PaddleSlim quant_post_static, algo {algo}: {sum(len(b) for b in batches)} images in "
            f"{time.time() - t0:.1f} s")
        return finish_int8(qdir, fp32_dir, output, check_images, report, int(cfg["export"]["opset"]), log, sens)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _ptq_pir(weights: str, q, batches, work: str, qdir: str, img_size: int, opset: int):
    """Paddle 3 PTQ (compat.int8_via_pir, slim/quant_pir.py): the BN-folded model's float ONNX,
    calibration through ``paddle.quantization.PTQ``, the fake-quantized program saved in
    ``qdir``. Returns (plan, float ONNX bytes)."""
    import copy
    from . import quant_pir as P
    from .. import load_model
    from ..model.fold import fold_batchnorm
    folded = load_model(weights)
    fold_batchnorm(folded)
    folded.eval()
    calib = copy.deepcopy(folded)
    try:
        P.prepare_ptq(calib, q["algo"], float(q["hist_percent"]), q["float_layers"])
    except ValueError as e:
        raise QuantError(str(e)) from None
    P.calibrate(calib, batches)
    plans = P.plan_from_ptq(calib)
    return plans, _save_pir(folded, plans, work, qdir, img_size, opset)


def _save_pir(folded, plans, work: str, qdir: str, img_size: int, opset: int) -> bytes:
    """Both Paddle 3 routes' end: the BN-folded float model's ONNX (the graph the Q/DQ go
    into; returned), then the same model fake-quantized by ``plans``, saved in ``qdir``."""
    import copy
    from . import quant_pir as P
    folded.eval()
    float_data = P.float_onnx(copy.deepcopy(folded), os.path.join(work, "fp32_folded"), img_size, opset)
    P.fake_quant_model(folded, plans)
    os.makedirs(qdir, exist_ok=True)
    with explicit_silu():
        P.save_paddle(folded, qdir, img_size)
    return float_data


@contextlib.contextmanager
def _calibration_errors(algo: str):
    """PaddleSlim's own failures as one error naming the algorithm (Paddle 2.6's 'avg' fails on
    this model's 0-d tensors: IndexError in _sample_avg)."""
    try:
        yield
    except (IndexError, ValueError, AssertionError, RuntimeError) as e:
        raise QuantError(f"PaddleSlim calibration with quant.algo={algo} failed ({type(e).__name__}: {e}); "
                         f"try quant.algo=mse, hist or KL") from None


@contextlib.contextmanager
def _quiet():
    """PaddleSlim's tqdm bars write to stderr many times a second; keep one line per run."""
    import io
    err = sys.stderr
    sys.stderr = io.StringIO()
    try:
        yield
    finally:
        sys.stderr = err


# ------------------------------------------------------------------------------ QAT

QAT_KEY_MARKS = ("_fake_quant_", "_ma_output_scale", "._layer.")


def qat_config(q) -> Dict[str, Any]:
    return {"weight_quantize_type": "channel_wise_abs_max",
            "activation_quantize_type": "moving_average_abs_max",
            "weight_bits": 8, "activation_bits": 8, "moving_rate": float(q["moving_rate"]),
            "quantizable_layer_type": ["Conv2D"], "onnx_format": True}


def split_for_qat(state):
    """(the float state to build the model from, the QAT state to load after wrapping or None)."""
    return (float_state(state), state) if is_qat_state(state) else (state, None)


def is_qat_state(state) -> bool:
    return any(m in k for k in state for m in QAT_KEY_MARKS)


def float_state(state):
    """The float model's state inside a QAT state dict: ``x._layer.weight`` -> ``x.weight``,
    scales and observers dropped, each folded conv's bias carried by an identity BN (the
    model's own layout); a float state is returned as it is."""
    from ..model.fold import bias_as_batchnorm
    if not is_qat_state(state):
        return state
    out = {}
    for k, v in state.items():
        if "_fake_quant_" in k or "_ma_output_scale" in k:
            continue
        out[k.replace("._layer.", ".")] = v
    return bias_as_batchnorm(out)[0]


def wrap_for_qat(model, q, qat_state=None, float_layers: Sequence[str] = ()):
    """Fold BN into the convs, wrap ``model`` in place with PaddleSlim's dygraph QAT (fake
    quantization of every Conv2D's input and weights, an observer on its output; Conv2D
    layers named in ``float_layers`` or 'detect' are left float), then load ``qat_state`` (a
    QAT state dict, e.g. from a checkpoint) if given."""
    require_int8_support()
    from paddleslim import QAT
    from ..model import assign_state
    from ..model.fold import fold_batchnorm
    fold_batchnorm(model)   # PaddleSlim's own fuse_conv_bn fuses a copy and drops it (2.6)
    detect = f"model.{len(model.model) - 1}" if hasattr(model, "model") else None
    entries = [f for f in float_layers if f != "detect" or detect]   # no Detect to find without .model
    for name, layer in model.named_sublayers():
        if in_float_layers(name, entries, detect):
            layer.skip_quant = True
    QAT(config=qat_config(q)).quantize(model)
    for n, p in model.named_parameters():   # scales are measured (moving average), not learned
        if "_fake_quant_" in n or "_ma_output_scale" in n:
            p.stop_gradient = True
    if qat_state is not None:
        assign_state(model, qat_state, source="QAT state")
    return model


def qat_export(weights: str, output: str, cfg, log: Callable[[str], None] = print) -> Dict[str, Any]:
    """A QAT checkpoint (from the trainer with quant.qat) -> the INT8 folder."""
    import paddle
    from paddle.static import InputSpec
    from paddleslim import QAT
    from ..model import load_weights
    require_int8_support()
    q = cfg["quant"]
    state, meta = load_weights(weights)
    if not is_qat_state(state):
        raise QuantError(f"{weights}: not a QAT checkpoint (no fake-quant scales); train one with "
                         f"tools/quant.py --method qat")
    img_size = int(cfg["img_size"])
    fmodel = load_model_from_state(float_state(state), meta, weights)
    model = wrap_for_qat(fmodel, q, state, q["float_layers"])
    model.eval()
    spec, _ = calibration_records(cfg["data"], 1, int(cfg["seed"]), log=lambda m: None)
    check_images = calibration_batches(spec.val[:int(q["check_images"])], img_size, len(spec.names), 8, log)
    output = os.path.abspath(output)
    parent = os.path.dirname(output)
    os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(prefix=f".{os.path.basename(output)}.quant-", dir=parent)
    try:
        fp32_dir, qdir = os.path.join(work, "fp32"), os.path.join(work, "int8")
        export_fp32(fmodel_copy(state, meta, weights), fmodel.meta, fp32_dir, img_size, log)
        report = {"method": "qat", "algo": None, "weights": os.path.abspath(weights), "img_size": img_size,
                  "float_layers": list(q["float_layers"]), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        if int8_via_pir():
            plans, float_data = _qat_pir(model, state, meta, weights, work, qdir, img_size, int(cfg["export"]["opset"]))
            return finish_int8_pir(qdir, fp32_dir, output, check_images, report, plans, float_data, log)
        os.makedirs(qdir)
        with explicit_silu():
            QAT(config=qat_config(q)).save_quantized_model(
                model, os.path.join(qdir, "model"),
                input_spec=[InputSpec([None, 3, img_size, img_size], "float32", name="images")])
        paddle.disable_static()
        return finish_int8(qdir, fp32_dir, output, check_images, report, int(cfg["export"]["opset"]), log)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _qat_pir(model, state, meta, weights: str, work: str, qdir: str, img_size: int, opset: int):
    """Paddle 3 QAT export (compat.int8_via_pir): the scales PaddleSlim's QAT layers hold (the
    wrapper trains on Paddle 3.3; only its ``save_quantized_model`` needs the old IR) make the
    plan; the BN-folded float model with exactly the QAT weights gives the float ONNX and the
    fake-quantized program. Returns (plan, float ONNX bytes)."""
    from . import quant_pir as P
    from ..model.fold import fold_batchnorm
    plans = P.plan_from_qat(model)
    folded = fmodel_copy(state, meta, weights)
    fold_batchnorm(folded)
    convs = P.conv_layers(folded)
    for p in plans:   # the QAT layer's own weights and bias (folding an identity BN could round)
        w, b = state.get(f"{p.layer}._layer.weight"), state.get(f"{p.layer}._layer.bias")
        if w is not None:
            convs[p.layer].weight.set_value(np.asarray(w, np.float32))
        if b is not None and convs[p.layer].bias is not None:
            convs[p.layer].bias.set_value(np.asarray(b, np.float32))
    return plans, _save_pir(folded, plans, work, qdir, img_size, opset)


def load_model_from_state(state, meta, source: str):
    """A float YOLOv5 Layer from a float state and its metadata record."""
    from ..model import ModelMeta, build_model
    m = ModelMeta.from_dict(meta or {})
    model = build_model(m, state, source=source)
    model.meta = m
    return model


def fmodel_copy(state, meta, source: str):
    """The QAT model's float weights as a plain model (the FP32 reference of the check)."""
    return load_model_from_state(float_state(state), meta, source)


from ..engine.callbacks import ModelHook, register_model_hook  # noqa: E402


@register_model_hook("quant")
class QATModelHook(ModelHook):
    """``quant.qat``: PaddleSlim's fake quantization wrapped around the trainer's model."""

    def enabled(self, cfg) -> bool:
        return bool(cfg["quant"]["qat"])

    def split_state(self, cfg, state):
        return split_for_qat(state)

    def wrap(self, cfg, model, extra) -> None:
        wrap_for_qat(model, cfg["quant"], extra, cfg["quant"]["float_layers"])
