"""Build a TensorRT engine from a ppyolo-slim .pdparams, layer by layer (no ONNX parser).

  python deploy/trt_build.py --weights pruned.pdparams --check              # anywhere: CPU check
  python deploy/trt_build.py --weights pruned.pdparams --fp16 -o yolo.engine  # GPU + TensorRT 10/11
  python deploy/trt_build.py --int8-from out/int8_ptq --check         # anywhere: INT8 graph vs onnxruntime
  python deploy/trt_build.py --int8-from out/int8_ptq -o yolo_int8.engine  # explicit Q/DQ, TensorRT 10/11
  python deploy/trt_build.py --weights W --int8 --calib-dir images/ --calib-cache calib.cache  # TensorRT 10
  python deploy/trt_build.py --weights W --dynamic-batch 1 8 16 --nms --fp16

--check builds the same network on a NumPy stand-in for TensorRT's network API, runs it
on the CPU and compares it with the Paddle model (exit 1 if they differ); with --int8-from,
the INT8 network with onnxruntime running the folder's model_int8.onnx. Without
--check, TensorRT and a GPU are needed; if either is missing the tool says what and how
to install it, and exits with code 2.
"""
import argparse
import os
import sys

import ppyolo_slim  # noqa: F401  (native import order before paddle)

EXIT_CHECK_FAILED, EXIT_UNAVAILABLE = 1, 2


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--weights", help=".pdparams (original, pruned or converted ultralytics); with --int8-from "
                                     "the default is the weights its quant_report.json names")
    p.add_argument("-o", "--output", help="engine file (default: the weights' name with .engine)")
    p.add_argument("--img-size", type=int, nargs="+", default=None,
                   help="input size: S or H W, multiples of 32 (default: the checkpoint's img_size; "
                        "--check defaults to 320)")
    p.add_argument("--batch", type=int, default=1, help="fixed batch size (default 1)")
    p.add_argument("--dynamic-batch", type=int, nargs=3, metavar=("MIN", "OPT", "MAX"),
                   help="dynamic batch with one optimisation profile, e.g. 1 8 16")
    p.add_argument("--fp16", action="store_true",
                   help="FP16: one strongly typed FP16 graph on TensorRT 10 and 11 (box decode in FP32); "
                        "--check --fp16 runs that graph")
    p.add_argument("--tf32", action="store_true",
                   help="allow TF32 in FP32 layers (TensorRT's default; off here so FP32 means FP32)")
    p.add_argument("--int8-from", metavar="DIR",
                   help="INT8 with explicit Q/DQ (TensorRT 10 and 11): the scales PaddleSlim computed, read from "
                        "DIR/model_int8.onnx of a tools/quant.py --output DIR")
    p.add_argument("--int8", action="store_true", help="INT8 with an entropy calibrator (TensorRT 10 only; "
                                                       "calibrates at the opt batch, box decode held in FP32)")
    p.add_argument("--strongly-typed", action="store_true",
                   help="TensorRT 10, FP32: build a strongly typed network as TensorRT 11 does (FP16 always is)")
    p.add_argument("--calib-dir", help="--int8: folder of representative images (letterboxed as in training)")
    p.add_argument("--calib-cache", help="--int8: calibration cache file, reused when it exists "
                                         "(default: <output>.calib)")
    p.add_argument("--calib-batch", type=int, default=8,
                   help="--int8: ignored unless it equals the engine's (opt) batch, which TensorRT calibrates at")
    p.add_argument("--calib-images", type=int, default=512, help="at most this many calibration images")
    p.add_argument("--workspace", type=float, default=4.0, help="builder workspace limit in GiB (default 4)")
    p.add_argument("--nms", action="store_true",
                   help="NMS inside the engine: INMSLayer (outputs nms_indices, nms_boxes x1y1x2y2, nms_scores) "
                        "or EfficientNMS_TRT (num_detections, detection_boxes, detection_scores, "
                        "detection_classes)")
    p.add_argument("--nms-backend", choices=("auto", "layer", "plugin"), default="auto",
                   help="--nms: layer = add_nms (INMSLayer), plugin = EfficientNMS_TRT (deprecated since "
                        "10.12); auto: the layer, the plugin for --agnostic-nms")
    p.add_argument("--conf-thres", type=float, default=0.25, help="--nms score threshold (obj x cls)")
    p.add_argument("--iou-thres", type=float, default=0.45, help="--nms IoU threshold")
    p.add_argument("--max-det", type=int, default=100, help="--nms boxes kept per image")
    p.add_argument("--agnostic-nms", action="store_true", help="--nms across classes")
    p.add_argument("--bn-as-scale", action="store_true",
                   help="BN as an IScaleLayer after each conv (tensorrtx style) instead of folded into it")
    p.add_argument("--check", action="store_true",
                   help="no TensorRT/GPU needed: run the hand-built graph on the CPU and compare with Paddle")
    p.add_argument("--check-image", help="--check: use this image (letterboxed) instead of seeded noise")
    p.add_argument("--seed", type=int, default=0, help="--check: seed of the noise input")
    p.add_argument("--atol", type=float, default=1e-4,
                   help="--check: float32 outputs pass within max(ATOL, 4 x the Paddle model's own "
                        "float32-vs-float64 noise), boxes and scores apart (default 1e-4)")
    p.add_argument("--json", help="--check: also write the report to this JSON file")
    p.add_argument("--verbose", action="store_true", help="TensorRT's verbose log")
    a = p.parse_args(argv)
    if a.img_size is not None and len(a.img_size) not in (1, 2):
        p.error("--img-size takes one value (square) or two (H W)")
    if a.batch < 1:
        p.error("--batch must be >= 1")
    if not a.weights and not a.int8_from:
        p.error("--weights is required (or --int8-from DIR, whose report names them)")
    if a.int8_from and (a.int8 or a.fp16 or a.bn_as_scale):
        p.error("--int8-from (explicit Q/DQ, FP32 graph with BN folded) goes with neither --int8, --fp16 nor "
                "--bn-as-scale")
    return a


def _img_size(a, meta_img_size, default):
    if a.img_size is None:
        s = default or meta_img_size
        return (s, s)
    return (a.img_size[0], a.img_size[-1])


def _nms(a):
    from .builder import NMSOptions
    return NMSOptions(a.conf_thres, a.iou_thres, a.max_det, a.agnostic_nms, a.nms_backend) if a.nms else None


def run_int8_check(a) -> int:
    from .qdq_check import check_int8_against_onnxruntime
    batch = a.batch if not a.dynamic_batch else a.dynamic_batch[1]
    rep = check_int8_against_onnxruntime(a.int8_from, a.weights, max(batch, 2), a.seed, a.check_image)
    q = rep["int8"]
    print(f"{a.int8_from}: INT8 TensorRT layer graph on the CPU ({rep['layers']} layers; {q['quantized_convs']} "
          f"convs with Q/DQ, float: {', '.join(q['float_convs']) or 'none'}) vs onnxruntime on "
          f"{os.path.basename(q['scales'])}, input {rep['batch']}x3x{rep['img_size'][0]}x{rep['img_size'][1]}")
    pl, ni, fd = rep["per_layer"], rep["network_integers"], rep["first_divergence"]
    print(f"  per layer: onnxruntime's conv inputs quantized with the network's scales: {pl['differ']} of "
          f"{pl['values']} integers differ from onnxruntime's")
    sg, tail = rep["segments"], rep["segments"]["output"]
    print(f"  part by part (each Q passing on onnxruntime's integers): {sg['differ']} of {sg['values']} conv-input "
          f"integers differ (up to {sg['max_steps']} step); output from the same integers: boxes max "
          f"{tail['box_px']['max']:.3g} px, scores {tail['score']['max']:.3g}")
    print(f"  free run: {ni['differ']} of {ni['values']} conv-input integers differ (up to {ni['max_steps']} steps), "
          "first at " + ("none" if fd is None else f"{fd['conv']} ({fd['differ']} of {fd['values']})"))
    for key, what in (("same_placement", "Q/DQ at TensorRT's placement"), ("file", "the file as written")):
        o = rep["outputs"][key]
        b, sc, eb, es = o["diff"]["box_px"], o["diff"]["score"], o["int8_vs_fp32"]["box_px"], o["int8_vs_fp32"]["score"]
        print(f"  output vs onnxruntime, {what}: boxes p99 {b['q0.99']:.3g} max {b['max']:.3g} px, scores p99 "
              f"{sc['q0.99']:.3g} max {sc['max']:.3g} (that model vs FP32: boxes p99 {eb['q0.99']:.3g} px, "
              f"scores p99 {es['q0.99']:.3g})")
    print(f"  kernel values our BN fold rounds one step off PaddleSlim's: {q['weight_flips']}")
    if a.json:
        from ppyolo_slim.utils.io import write_json
        write_json(a.json, rep)
    print("PASS" if rep["passed"] else "FAIL: " + "; ".join(rep["failures"]))
    return 0 if rep["passed"] else EXIT_CHECK_FAILED


def run_check(a) -> int:
    if a.int8_from:
        return run_int8_check(a)
    from .check import check_against_paddle
    hw = _img_size(a, None, 320)
    rep = check_against_paddle(a.weights, hw, a.batch if not a.dynamic_batch else a.dynamic_batch[1],
                               a.seed, a.check_image, a.atol, fp16=a.fp16, nms=_nms(a),
                               bn_as_scale=a.bn_as_scale)
    w = rep.worst
    print(f"{a.weights}: TensorRT layer graph on the CPU (NumPy stand-in, {rep.layers} layers) vs the "
          f"Paddle model, input {rep.batch}x3x{hw[0]}x{hw[1]}, output {list(rep.output_shape)}")
    print(f"  max |diff| = {rep.max_abs_diff:.3g} at image {w['batch']} row {w['row']} (level {w['level']}, "
          f"{w['field']}: paddle {w['paddle']:.6g}, trt {w['trt']:.6g})")
    n = rep.float32_noise
    print(f"  Paddle's own float32 noise (float32 vs float64): boxes {n['box_px']:.3g} px, scores "
          f"{n['score']:.3g}; float64 graph vs Paddle float64: relative {rep.exact_max_rel_diff:.3g}")
    print(f"  tolerance: {rep.tolerance}")
    if rep.fp16:
        print(f"  FP16 graph (the one TensorRT builds, half rounding emulated): boxes max |diff| "
              f"{rep.fp16['box_px']:.3g} px, scores {rep.fp16['score']:.3g}, max relative "
              f"{rep.fp16['max_rel_diff']:.3g} (informational)")
    if rep.nms:
        print(f"  NMS in the engine ({rep.nms['backend']}, emulated): detections per image "
              f"{rep.nms['num_detections']}")
    if a.json:
        from ppyolo_slim.utils.io import write_json
        write_json(a.json, rep.to_dict())
    print("PASS" if rep.passed else "FAIL: the TensorRT graph does not reproduce the Paddle model")
    return 0 if rep.passed else EXIT_CHECK_FAILED


def run_build(a) -> int:
    from .builder import load_checkpoint
    from .engine import EngineOptions, build_engine
    from .trt_compat import TensorRTUnavailable, require_tensorrt_and_gpu
    if a.int8_from:          # the folder is checked first: a missing scale file is said before TensorRT is
        from .qdq_check import int8_weights
        from .qdq_scales import load_qdq_scales
        a.weights = int8_weights(load_qdq_scales(a.int8_from), a.weights)[2]
    try:
        require_tensorrt_and_gpu()
    except TensorRTUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    _, meta = load_checkpoint(a.weights)
    out = a.output or os.path.splitext(a.weights)[0] + ".engine"
    o = EngineOptions(img_size=_img_size(a, meta.img_size, None), batch=a.batch,
                      dynamic=tuple(a.dynamic_batch) if a.dynamic_batch else None, fp16=a.fp16,
                      int8=a.int8, strongly_typed=True if a.strongly_typed else None,
                      workspace_gib=a.workspace, nms=_nms(a), calib_dir=a.calib_dir,
                      calib_cache=a.calib_cache or (out + ".calib" if a.int8 else None),
                      calib_batch=a.calib_batch, calib_images=a.calib_images,
                      bn_as_scale=a.bn_as_scale, tf32=a.tf32, verbose=a.verbose, int8_from=a.int8_from)
    try:
        side = build_engine(a.weights, out, o)
    except TensorRTUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    print(f"wrote {out} ({side['precision']}, {side['layers']} layers, built in {side['build_seconds']} s) "
          f"and {out}.json")
    return 0


def main(argv=None) -> int:
    a = parse_args(argv)
    from ppyolo_slim.model.channels import WeightShapeError
    from ppyolo_slim.model.weights import CheckpointError
    from .qdq_scales import ScalesError
    try:
        return run_check(a) if a.check else run_build(a)
    except (FileNotFoundError, WeightShapeError, CheckpointError, ScalesError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_CHECK_FAILED


if __name__ == "__main__":
    sys.exit(main())
