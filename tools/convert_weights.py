"""Convert an ultralytics YOLOv5 (v6+) checkpoint to a ppyolo-slim .pdparams.

    python tools/convert_weights.py --src yolov5n.pt --dst yolov5n.pdparams [--names a,b,c]

Reads the .pt without torch and without ultralytics' code, and never runs code from it.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ppyolo_slim  # noqa: E402,F401  (owns native import order; before paddle)
from ppyolo_slim.model.convert import convert_ultralytics, parse_names  # noqa: E402
from ppyolo_slim.model.weights import CheckpointError, UnsafeCheckpointError  # noqa: E402
from ppyolo_slim.model.channels import WeightShapeError  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", required=True, help="ultralytics .pt (training checkpoint or state dict)")
    ap.add_argument("--dst", help="output .pdparams (default: SRC with .pdparams)")
    ap.add_argument("--names", help="class names: a,b,c or a .txt (one per line) or a data .yaml; "
                                    "default: the names stored in the checkpoint")
    ap.add_argument("--use", choices=("auto", "ema", "model"), default="auto",
                    help="which weights of a training checkpoint (auto: ema if present, else model)")
    ap.add_argument("--img-size", type=int, default=640, help="image size recorded in the metadata")
    args = ap.parse_args(argv)
    dst = args.dst or os.path.splitext(args.src)[0] + ".pdparams"
    try:
        r = convert_ultralytics(args.src, dst, parse_names(args.names), args.use, args.img_size)
    except (CheckpointError, UnsafeCheckpointError, WeightShapeError, FileNotFoundError) as e:
        print(f"convert_weights: error: {e}", file=sys.stderr)
        return 2
    print(f"{args.src} ({r['used']}, {'/'.join(r['source_dtype'])}) -> {dst}: nc={r['nc']}, "
          f"{r['tensors']} tensors, {r['values']:,} values; multiples from {r['multiples_from']}"
          + (f"; {r['eps_adjusted']} BN eps folded into the variance" if r["eps_adjusted"] else "")
          + (f"; {r['unfused']} fused convs given identity BN" if r["unfused"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
