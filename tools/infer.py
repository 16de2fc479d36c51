#!/usr/bin/env python
"""Detect objects in images; draw boxes with class names and scores, write one JSON per image.

  python tools/infer.py --weights best.pdparams --source images/ --output out/
  python tools/infer.py --weights best.pdparams --source bus.jpg --output out/ --conf-thres 0.4

--onnx model.onnx (ONNX Runtime), --model-dir DIR (Paddle Inference) and --engine X.engine
(TensorRT, built by deploy/trt_build.py; needs a GPU) take the place of --weights.
Unreadable images are reported and skipped.
"""
import argparse
import os
import sys

try:
    import ppyolo_slim  # noqa: F401  first: it owns the native import order
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import ppyolo_slim  # noqa: F401


def parse_args(argv=None):
    from ppyolo_slim.engine.predict import add_predictor_args
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_predictor_args(p)
    p.add_argument("--source", required=True, help="an image, a folder of images, or a glob pattern")
    p.add_argument("--output", required=True, help="folder for the drawn images and JSON files")
    p.add_argument("--img-size", type=int, help="input size (default: the model's own)")
    p.add_argument("--conf-thres", type=float, default=0.25, help="score threshold (default 0.25)")
    p.add_argument("--iou-thres", type=float, default=0.45, help="NMS IoU threshold (default 0.45)")
    p.add_argument("--max-det", type=int, default=300, help="detections kept per image (default 300)")
    p.add_argument("--classes", type=int, nargs="+", help="keep only these class ids")
    p.add_argument("--agnostic-nms", action="store_true", help="NMS across classes")
    p.add_argument("--no-images", action="store_true", help="write the JSON files only")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from ppyolo_slim.engine.predict import (PredictorUnavailable, check_img_size, infer_images,
                                            list_images, predictor_from_args)
    from ppyolo_slim.model import CheckpointError, WeightShapeError

    try:
        files = list_images(args.source)
        predictor = predictor_from_args(args)
        img_size, warning = check_img_size(args.img_size or predictor.img_size or 640, predictor)
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
        summary = infer_images(predictor, files, args.output, img_size, args.conf_thres, args.iou_thres,
                               args.max_det, agnostic=args.agnostic_nms, classes=args.classes,
                               save_images=not args.no_images)
    except (CheckpointError, WeightShapeError, PredictorUnavailable, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    skipped = summary["skipped"]
    print(f"{summary['images']} images, {summary['detections']} detections -> {args.output}"
          + (f"; {len(skipped)} skipped: " + ", ".join(s["path"] for s in skipped) if skipped else ""))
    if not summary["images"]:
        print("error: none of the inputs could be read as an image", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
