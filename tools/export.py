#!/usr/bin/env python
"""Export a checkpoint for deployment: a Paddle inference model, an ONNX file, infer_cfg.yml.

  python tools/export.py --weights best.pdparams --output export/
  python tools/export.py --weights pruned.pdparams --output export/ --img-size 640 --dynamic-batch
  python tools/export.py --weights best.pdparams --output export_nms/ --nms --conf-thres 0.3

Writes model.pdmodel + model.pdiparams (paddle.jit.save), model.onnx (paddle2onnx; input
'images' [B,3,S,S], output 'output0' [B,N,5+nc] as ultralytics YOLOv5), infer_cfg.yml and
export_report.json. Then runs the ONNX file (onnxruntime) and the inference model (Paddle
Inference) against the dygraph model on the same input: a difference beyond what is allowed
(--tolerance, widened to 50x the model's own float32 rounding noise) is an error (exit 1)
and nothing is written to --output.

--nms adds NMS to the ONNX graph: outputs 'detections' [K,7] (batch_index, x1, y1, x2, y2,
score, class_id; input pixels) and 'output0'. The Paddle inference model stays raw.
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
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, help="a .pdparams checkpoint (original, pruned or converted)")
    p.add_argument("--output", required=True, help="export folder (created; files in it are replaced)")
    p.add_argument("--img-size", type=int, help="input size, a multiple of 32 (default: the checkpoint's)")
    b = p.add_mutually_exclusive_group()
    b.add_argument("--batch", type=int, default=1, help="fixed batch size (default 1)")
    b.add_argument("--dynamic-batch", action="store_true", help="any batch size (batch axis 'batch')")
    p.add_argument("--opset", type=int, default=13, help="ONNX opset, 11..19 (default 13)")
    p.add_argument("--nms", action="store_true", help="append NMS to the ONNX graph (see above)")
    p.add_argument("--conf-thres", type=float, default=0.25, help="score threshold for --nms and infer_cfg.yml")
    p.add_argument("--iou-thres", type=float, default=0.45, help="NMS IoU threshold (default 0.45)")
    p.add_argument("--max-det", type=int, default=300, help="NMS: boxes kept per class and image")
    p.add_argument("--no-onnx", action="store_true", help="write the Paddle inference model only")
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime / Paddle Inference check")
    p.add_argument("--tolerance", type=float, default=None,
                   help="floor of the accepted difference from dygraph (default 1e-4): boxes may differ "
                        "by max(TOL x img_size px, 50x the model's measured float32 rounding noise), "
                        "scores by max(TOL, 50x that noise); see ppyolo_slim/export/check.py")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from ppyolo_slim.export.check import DEFAULT_TOL, ExportCheckError
    from ppyolo_slim.export.exporter import ExportError, export_model
    from ppyolo_slim.model import CheckpointError, WeightShapeError

    try:
        export_model(args.weights, args.output, img_size=args.img_size,
                     batch=None if args.dynamic_batch else args.batch, opset=args.opset, nms=args.nms,
                     onnx=not args.no_onnx, check=not args.no_check, conf_thres=args.conf_thres,
                     iou_thres=args.iou_thres, max_det=args.max_det,
                     tol=DEFAULT_TOL if args.tolerance is None else args.tolerance)
    except ExportCheckError as e:
        print(f"error: export check failed, nothing written to {args.output}:\n{e}", file=sys.stderr)
        return 1
    except (ExportError, CheckpointError, WeightShapeError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
