"""``deploy/gpu_check.py``: prove the engines on a GPU, in one command.

    python deploy/gpu_check.py --weights original.pdparams --weights pruned.pdparams \\
        --output gpu_report.json [--data configs/data.yaml] [--images DIR] [--img-size 640]

For each weights file it builds, in ``--workdir``:

- ``fp32``: the hand-built network (ppyolo_slim/deploy/builder.py), FP32 with TF32 off;
- ``fp16``: the same network as one strongly typed FP16 graph (the box decode in FP32);
- ``onnx_parser_fp32``: TensorRT's own ONNX parser on the paddle2onnx export of the same
  weights, FP32 with TF32 off: an independent route to the same function;
- ``int8_qdq`` (with ``--int8-from DIR``, a tools/quant.py output of the same weights): the
  hand-built network with explicit Q/DQ and the folder's scales (trt_build.py --int8-from),
  compared with onnxruntime running the folder's ``model_int8.onnx`` as well as with Paddle;
- what ``register_engine_kind`` adds.

All engines take a dynamic batch 1..8. On the same real letterboxed images (``--images``, or
the val split of ``--data``) it compares every output with the Paddle model (float32, on the
CPU: cuDNN may use TF32) per Detect level, boxes in pixels and scores apart, next to Paddle's
own float32-vs-float64 noise on those images; with ``--data`` it scores each engine and Paddle
on the val split (mAP); it times every engine at batch 1 and 8 (median, p90), the engines
alternating call by call so clock and temperature drift hit them alike. The report is one
JSON file. Without TensorRT or a GPU it stops with one line and exit code 2.

NEVER RUN on a GPU so far (none on the machines this was written on). Its comparison, timing
and report logic is tested in CI with the NumPy stand-in in place of TensorRT
(tests/test_deploy_gpu_check.py).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

import ppyolo_slim  # noqa: F401  (native import order before paddle)

EXIT_FAILED, EXIT_UNAVAILABLE = 1, 2
BATCHES = (1, 8)
STRIDES = (8, 16, 32)
# FP32 engines pass when within this many times Paddle's float32 noise (as the export check,
# ppyolo_slim/export/check.py: other kernels sum in another order); FP16 is reported only
FP32_NOISE_FACTOR = 50.0


# ---------------------------------------------------------------------------- comparison
def level_rows(img_hw: Sequence[int], na: int = 3, strides: Sequence[int] = STRIDES) -> List[tuple]:
    """(name, first row, end row) of each Detect level in the [B, N, 5+nc] output."""
    h, w = img_hw
    out, start = [], 0
    for s in strides:
        n = na * (h // s) * (w // s)
        out.append((f"P{int(np.log2(s))}/{s}", start, start + n))
        start += n
    return out


def _maxdiff(a: np.ndarray, b: np.ndarray) -> Dict[str, float]:
    d = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
    d = np.where(np.isfinite(d), d, np.inf)
    return {"box_px": float(d[..., :4].max(initial=0.0)), "score": float(d[..., 4:].max(initial=0.0))}


def compare_per_level(out: np.ndarray, ref: np.ndarray, img_hw: Sequence[int]) -> Dict[str, Any]:
    """Max |out - ref| per Detect level and overall, boxes (px) and scores apart."""
    out, ref = np.asarray(out), np.asarray(ref)
    if out.shape != ref.shape:
        return {"error": f"output shape {list(out.shape)}, Paddle gives {list(ref.shape)}"}
    levels = level_rows(img_hw)
    if levels[-1][2] != ref.shape[1]:
        return {"error": f"{ref.shape[1]} rows, the Detect levels of {list(img_hw)} give {levels[-1][2]}"}
    res = {name: _maxdiff(out[:, a:b], ref[:, a:b]) for name, a, b in levels}
    res["all"] = _maxdiff(out, ref)
    return res


def verdict(diff: Dict[str, Any], noise: Dict[str, float], factor: float, atol: float = 1e-4) -> Dict[str, Any]:
    """Whether ``diff['all']`` is within max(atol, factor x noise), and by how many noises."""
    if "error" in diff:
        return {"passed": False, "why": diff["error"]}
    allowed = {k: max(atol, factor * noise[k]) for k in ("box_px", "score")}
    ratio = {k: diff["all"][k] / noise[k] if noise[k] > 0 else float("inf") for k in allowed}
    return {"passed": all(diff["all"][k] <= allowed[k] for k in allowed), "allowed": allowed,
            "times_noise": ratio}


# ---------------------------------------------------------------------------- timing
def time_alternating(runners: Dict[str, Callable[[np.ndarray], Any]], inputs: Dict[int, np.ndarray],
                     iters: int = 200, warmup: int = 20, clock: Callable[[], float] = time.perf_counter
                     ) -> Dict[str, Dict[str, Dict[str, float]]]:
    """{runner: {batch: {median_ms, p90_ms, iters}}}. Per batch, every runner is warmed up, then
    the runners take turns call by call (the first of each round rotates), so none is timed
    only while the GPU is cooler or its clock higher."""
    names = list(runners)
    times: Dict[str, Dict[int, List[float]]] = {n: {b: [] for b in inputs} for n in names}
    for b, x in inputs.items():
        for n in names:
            for _ in range(warmup):
                runners[n](x)
        for i in range(iters):
            for j in range(len(names)):
                n = names[(i + j) % len(names)]
                t0 = clock()
                runners[n](x)
                times[n][b].append((clock() - t0) * 1000.0)
    return {n: {str(b): {"median_ms": float(np.median(t)), "p90_ms": float(np.percentile(t, 90)),
                         "iters": len(t)} for b, t in per.items()} for n, per in times.items()}


# ---------------------------------------------------------------------------- engines
class EngineKind:
    """How to build one engine of the comparison: ``build(weights, engine_path, img_size, workdir,
    log) -> engine path`` (with its sidecar), and whether it must match Paddle at FP32 precision."""

    def __init__(self, name: str, build: Callable[..., str], fp32: bool):
        self.name, self.build, self.fp32 = name, build, fp32


def _build_hand(**precision):
    """A build of this builder's network, batch 1..8, TF32 off; ``precision``: fp16=True, or
    int8_from=DIR (the int8_qdq kind: that tools/quant.py folder's scales)."""
    def build(weights, engine_path, img_size, workdir, log):
        from .engine import EngineOptions, build_engine
        build_engine(weights, engine_path, EngineOptions(img_size=(img_size, img_size), batch=max(BATCHES),
                                                         dynamic=(1, max(BATCHES), max(BATCHES)),
                                                         tf32=False, **precision), log=log)
        return engine_path
    return build


def int8_folders(folders: Sequence[str]) -> Dict[str, str]:
    """{absolute weights path: folder} of ``--int8-from`` folders, from each folder's report (an
    unreadable folder is an error now, before any engine is built)."""
    from .qdq_scales import load_qdq_scales
    out: Dict[str, str] = {}
    for f in folders or ():
        sc = load_qdq_scales(f)
        if not sc.weights:
            raise ValueError(f"{f}: its quant_report.json names no weights")
        if sc.method == "qat":   # the comparison's reference is the float Paddle model of --weights
            raise ValueError(f"{f}: a QAT folder; gpu_check compares with the float model of --weights, which "
                             f"a QAT checkpoint is not. Check it with deploy/trt_build.py --int8-from {f} --check "
                             f"(CPU) and build it with deploy/trt_build.py --int8-from {f}")
        out[os.path.abspath(sc.weights)] = f
    return out


def build_onnx_parser_engine(weights, engine_path, img_size, workdir, log):
    """paddle2onnx export of ``weights`` (dynamic batch), parsed by TensorRT's OnnxParser, FP32
    with TF32 off, one profile 1..8; a sidecar in trt_build.py's format."""
    from ppyolo_slim.export import export_model
    from ppyolo_slim.utils.io import write_json
    from ppyolo_slim.utils.io import atomic_write_bytes
    from .builder import load_checkpoint
    from .engine import SIDECAR_FORMAT, sidecar_path
    from .trt_compat import require_tensorrt_and_gpu, trt_major
    trt, gpu = require_tensorrt_and_gpu()
    out_dir = os.path.join(workdir, os.path.splitext(os.path.basename(engine_path))[0] + "_export")
    export_model(weights, out_dir, img_size=img_size, batch=None, log=log)
    onnx_path = os.path.join(out_dir, "model.onnx")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    with open(onnx_path, "rb") as f:
        if not parser.parse(f.read()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RuntimeError(f"{onnx_path}: TensorRT's ONNX parser refuses it: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 4 << 30)
    config.clear_flag(trt.BuilderFlag.TF32)
    images = network.get_input(0)
    profile = builder.create_optimization_profile()
    hi = max(BATCHES)
    profile.set_shape(images.name, (1, 3, img_size, img_size), (hi, 3, img_size, img_size),
                      (hi, 3, img_size, img_size))
    config.add_optimization_profile(profile)
    t0 = time.time()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"{onnx_path}: TensorRT could not build the ONNX parser's network (its log says why)")
    atomic_write_bytes(engine_path, bytes(memoryview(serialized)))
    _, meta = load_checkpoint(weights)
    outputs = [network.get_output(i) for i in range(network.num_outputs)]
    write_json(sidecar_path(engine_path), {
        "format": SIDECAR_FORMAT, "engine": os.path.basename(engine_path), "weights": os.path.abspath(weights),
        "builder": "onnx-parser", "onnx": os.path.abspath(onnx_path), "tensorrt_version": str(trt.__version__),
        "tensorrt_major": trt_major(trt), "gpu": gpu, "precision": "fp32", "tf32": False,
        "img_size": [img_size, img_size], "input": {"name": images.name, "shape": list(images.shape)},
        "outputs": [{"name": t.name, "shape": list(t.shape)} for t in outputs],
        "batch": {"min": 1, "opt": hi, "max": hi}, "nc": meta.nc, "names": list(meta.names), "nms": None,
        "build_seconds": round(time.time() - t0, 1)})
    return engine_path


ENGINE_KINDS: Dict[str, EngineKind] = {
    "fp32": EngineKind("fp32", _build_hand(), fp32=True),
    "fp16": EngineKind("fp16", _build_hand(fp16=True), fp32=False),
    "onnx_parser_fp32": EngineKind("onnx_parser_fp32", build_onnx_parser_engine, fp32=True),
}


def register_engine_kind(kind: EngineKind) -> None:
    """The extension point for more engines. Its ``build`` must write an engine taking the
    letterboxed images at batch 1..8 and giving the [B, N, 5+nc] output, with a trt_build.py-style
    sidecar; it is then compared, scored and timed like the others (with ``fp32=False``:
    reported, not judged)."""
    if kind.name in ENGINE_KINDS:
        raise ValueError(f"engine kind {kind.name!r} exists already")
    ENGINE_KINDS[kind.name] = kind


# ---------------------------------------------------------------------------- one model
def output_name(eng) -> str:
    outs = [o["name"] for o in eng.side["outputs"]]
    if len(outs) != 1:
        raise ValueError(f"expected one [B, N, 5+nc] output, the engine has {outs}")
    return outs[0]


def load_images(files: Sequence[str], img_size: int, n: int) -> np.ndarray:
    """[n, 3, S, S] letterboxed as in training, the files repeated if fewer than n."""
    from .calibrator import load_letterboxed
    if not files:
        raise ValueError("no images: give --images DIR or --data (its val split)")
    return np.stack([load_letterboxed(files[i % len(files)], (img_size, img_size)) for i in range(n)])


def _on_cpu(fn, *args):
    """Run the Paddle reference on the CPU (cuDNN may use TF32), then restore Paddle's device."""
    import paddle
    prev = paddle.get_device()
    paddle.set_device("cpu")
    try:
        return fn(*args)
    finally:
        paddle.set_device(prev)


def check_model(weights: str, engines: Dict[str, Any], fp32_kinds: Sequence[str], images: np.ndarray,
                img_size: int, iters: int = 200, warmup: int = 20,
                score_map: Optional[Callable[[Any], Dict[str, float]]] = None,
                reference=None, reference64=None,
                more_refs: Optional[Dict[str, Dict[str, Callable[[np.ndarray], np.ndarray]]]] = None
                ) -> Dict[str, Any]:
    """Compare, score and time the built ``engines`` ({kind: object with .side and .infer}) of one
    weights file on ``images`` [8, 3, S, S]. ``score_map(engine or None for Paddle)`` gives
    {map50_95, map50} on the val split (``--data``). ``more_refs`` ({kind: {name: fn}}): those
    engines are also compared with these references (INT8: the same Q/DQ network in NumPy, and
    onnxruntime on model_int8.onnx; the difference from Paddle's float model is mostly the
    quantization's own)."""
    from .check import float32_noise, run_paddle, run_paddle_float64
    reference = reference or run_paddle
    reference64 = reference64 or run_paddle_float64
    ref = _on_cpu(reference, weights, images)
    noise = float32_noise(ref, _on_cpu(reference64, weights, images))
    rep: Dict[str, Any] = {"weights": os.path.abspath(weights), "images": int(images.shape[0]),
                           "img_size": img_size, "paddle_float32_noise": noise, "engines": {}}
    if score_map is not None:
        rep["paddle_map"] = score_map(None)
    runners, passed = {}, True
    for kind, eng in engines.items():
        name = output_name(eng)
        e: Dict[str, Any] = {"precision": eng.side.get("precision"), "builder": eng.side.get("builder", "ppyolo-slim"),
                             "tensorrt_version": eng.side.get("tensorrt_version"), "output": name}
        diff = {str(b): compare_per_level(eng.infer(images[:b])[name], ref[:b], (img_size, img_size))
                for b in BATCHES}
        e["max_diff"] = diff
        for ref_name, fn in (more_refs or {}).get(kind, {}).items():
            e.setdefault("max_diff_vs", {})[ref_name] = {
                str(b): compare_per_level(eng.infer(images[:b])[name], fn(images[:b]), (img_size, img_size))
                for b in BATCHES}
        judged = kind in fp32_kinds
        v = [verdict(d, noise, FP32_NOISE_FACTOR) for d in diff.values()]
        e["verdict"] = {"judged": judged, "passed": all(x["passed"] for x in v), "by_batch": dict(zip(diff, v))}
        passed &= e["verdict"]["passed"] or not judged
        if score_map is not None:
            e["map"] = score_map(eng)
            e["map_delta_vs_paddle"] = {k: e["map"][k] - rep["paddle_map"][k] for k in e["map"]}
        rep["engines"][kind] = e
        runners[kind] = eng.infer
    inputs = {b: np.ascontiguousarray(images[:b]) for b in BATCHES}
    for kind, t in time_alternating(runners, inputs, iters, warmup).items():
        rep["engines"][kind]["timing"] = t
    rep["passed"] = bool(passed)
    return rep


def int8_references(folder: str) -> Dict[str, Callable[[np.ndarray], np.ndarray]]:
    """What an int8_qdq engine of ``folder`` is compared with: ``numpy_qdq``, the same network
    with the same Q/DQ run by the NumPy stand-in (checked against onnxruntime layer by layer,
    qdq_check.py), the reference it should match; ``onnxruntime_file``, model_int8.onnx as
    written (which also quantizes the SiLU and adds: near, not equal)."""
    from .qdq_check import int8_weights, run_int8_standin
    from .qdq_scales import load_qdq_scales
    scales = load_qdq_scales(folder)
    state, meta, _ = int8_weights(scales)
    return {"numpy_qdq": lambda x: run_int8_standin(state, meta, scales, np.asarray(x, np.float32))[0],
            "onnxruntime_file": onnxruntime_runner(os.path.join(folder, "model_int8.onnx"))}


def onnxruntime_runner(path: str) -> Callable[[np.ndarray], np.ndarray]:
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: np.ascontiguousarray(x, np.float32)})[0]


# ---------------------------------------------------------------------------- command line
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--weights", action="append", required=True,
                   help=".pdparams; repeat for several (e.g. the original and the pruned model)")
    p.add_argument("--output", required=True, help="the report (JSON)")
    p.add_argument("--data", help="data spec: its val split gives the images and the mAP")
    p.add_argument("--images", help="folder of images for the comparison (default: --data's val split)")
    p.add_argument("--img-size", type=int, default=None, help="input size (default: the checkpoint's)")
    p.add_argument("--engines", nargs="+", default=None,
                   help=f"engine kinds to build (default: all of {', '.join(ENGINE_KINDS)})")
    p.add_argument("--int8-from", action="append", default=[], metavar="DIR",
                   help="a tools/quant.py output folder (PTQ or QAT) of one of the --weights: adds the "
                        "int8_qdq engine for those weights; repeat for several")
    p.add_argument("--workdir", default="output/gpu_check", help="engines and exports go here")
    p.add_argument("--iters", type=int, default=200, help="timed calls per engine and batch")
    p.add_argument("--warmup", type=int, default=20)
    a = p.parse_args(argv)
    unknown = set(a.engines or ()) - set(ENGINE_KINDS)
    if unknown:
        p.error(f"unknown engine kinds {sorted(unknown)}; known: {', '.join(ENGINE_KINDS)}")
    if not a.images and not a.data:
        p.error("give --images DIR or --data (the comparison needs real images)")
    return a


def _image_files(a) -> List[str]:
    from ppyolo_slim.engine.predict import list_images
    if a.images:
        return list_images(a.images)
    from ppyolo_slim.data import load_data
    return [r.path for r in load_data(a.data).val]


def main(argv=None) -> int:
    a = parse_args(argv)
    try:   # the folders first: a wrong one is said before TensorRT is looked for
        int8 = int8_folders(a.int8_from)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    stray = sorted(set(int8) - {os.path.abspath(w) for w in a.weights})
    if stray:
        print(f"error: --int8-from {int8[stray[0]]} was quantized from {stray[0]}, which is not one of --weights",
              file=sys.stderr)
        return EXIT_FAILED
    from .trt_compat import TensorRTUnavailable, require_tensorrt_and_gpu
    try:
        trt, gpu = require_tensorrt_and_gpu()
    except TensorRTUnavailable as e:
        print("error: gpu_check needs TensorRT and an NVIDIA GPU: " + "; ".join(p.rstrip(".") for p in e.problems)
              + " (deploy/README.md says how to install TensorRT)", file=sys.stderr)
        return EXIT_UNAVAILABLE
    from ppyolo_slim.utils.io import write_json
    from .builder import load_checkpoint
    from .trt_runtime import TrtEngine, TrtPredictor
    kinds = [ENGINE_KINDS[k] for k in (a.engines or ENGINE_KINDS)]
    files = _image_files(a)
    report = {"gpu": gpu, "tensorrt_version": str(trt.__version__), "made": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "engine_kinds": [k.name for k in kinds] + (["int8_qdq"] if int8 else []),
              "not_built": [] if int8 else ["int8_qdq (give --int8-from DIR, a tools/quant.py output)"],
              "models": {}}
    ok = True
    os.makedirs(a.workdir, exist_ok=True)
    for w in a.weights:
        _, meta = load_checkpoint(w)
        size = int(a.img_size or meta.img_size)
        stem = os.path.splitext(os.path.basename(w))[0]
        engines, paths = {}, {}
        folder = int8.get(os.path.abspath(w))
        if folder:
            from .qdq_check import onnx_input_hw
            hw = onnx_input_hw(os.path.join(folder, "model_int8.onnx"))
            if hw is not None and tuple(hw) != (size, size):
                print(f"error: {folder}/model_int8.onnx takes {hw[0]}x{hw[1]} images, the check runs at "
                      f"{size}x{size}; give --img-size {hw[0]}", file=sys.stderr)
                return EXIT_FAILED
        own = kinds + ([EngineKind("int8_qdq", _build_hand(int8_from=folder), fp32=False)] if folder else [])
        for k in own:
            paths[k.name] = os.path.join(a.workdir, f"{stem}_{k.name}.engine")
            print(f"{w}: building {k.name} -> {paths[k.name]}")
            engines[k.name] = TrtEngine(k.build(w, paths[k.name], size, a.workdir, print))
        score = None
        if a.data:
            from ppyolo_slim.engine.evaluate import evaluate_on_data
            from ppyolo_slim.engine.predict import DygraphPredictor
            by_engine = {id(e): paths[k] for k, e in engines.items()}

            def score(eng, w=w, size=size):
                pred = DygraphPredictor.from_weights(w) if eng is None else TrtPredictor(by_engine[id(eng)])
                r = evaluate_on_data(pred, a.data, size)
                return {"map50_95": r["map50_95"], "map50": r["map50"]}
        rep = check_model(w, engines, [k.name for k in kinds if k.fp32], load_images(files, size, max(BATCHES)),
                          size, a.iters, a.warmup, score,
                          more_refs={"int8_qdq": int8_references(folder)} if folder else None)
        for eng in engines.values():
            eng.close()
        report["models"][stem] = rep
        ok &= rep["passed"]
        for k, e in rep["engines"].items():
            d, t = e["max_diff"][str(max(BATCHES))]["all"], e["timing"]
            state = ("ok" if e["verdict"]["passed"] else "DIFFERENT") + ("" if e["verdict"]["judged"]
                                                                      else ", reported only")
            times = ", ".join(f"batch {b}: median {v['median_ms']:.2f} ms, p90 {v['p90_ms']:.2f}" for b, v in t.items())
            print(f"  {k}: max |diff| boxes {d['box_px']:.3g} px, scores {d['score']:.3g} ({state}); {times}")
            for ref_name, by_batch in e.get("max_diff_vs", {}).items():
                d = by_batch[str(max(BATCHES))]["all"]
                print(f"  {k} vs {ref_name}: max |diff| boxes {d['box_px']:.3g} px, scores {d['score']:.3g}")
    write_json(a.output, report)
    print(f"wrote {a.output}")
    return 0 if ok else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
