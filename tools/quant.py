#!/usr/bin/env python
"""INT8 with PaddleSlim (on Paddle 3: paddle.quantization, docs/paddle3.md): post-training
quantization or quantization-aware training.

  python tools/quant.py -c configs/quant.yml --weights best.pdparams --method ptq --output out/int8
  python tools/quant.py -c configs/quant.yml --weights best.pdparams --method qat --output out/int8_qat
  python tools/quant.py -c configs/quant.yml --weights out/int8_qat/train/best.pdparams --method qat \
      --export-only --output out/int8_qat

Writes into --output: model.pdmodel (Paddle 3: model.json) + model.pdiparams (Paddle Inference
INT8), model_int8.onnx (QDQ for onnxruntime), infer_cfg.yml, quant_report.json. The ONNX file
is run in onnxruntime against the fake-quantized Paddle model on val images; a difference beyond
the tolerance (ppyolo_slim/slim/quant.py, check_int8) is an error (exit 1) and nothing is written.
QAT fine-tunes with the project's trainer into <output>/train; a killed run continues with
the same command (or tools/train.py --resume <output>/train/last.pdparams).
Then: tools/eval.py --onnx <output>/model_int8.onnx, or --model-dir <output>.
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
    p.add_argument("-c", "--config", default="configs/quant.yml", help="config YAML (data, img_size, quant.*)")
    p.add_argument("--weights", required=True, help="FP32 .pdparams (original or pruned); with "
                   "--export-only a QAT checkpoint")
    p.add_argument("--method", choices=("ptq", "qat"), required=True)
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--sensitivity", action="store_true", help="ptq: also the per-layer study "
                   "(val mAP with each conv, the SiLU parts, the Detect convs in float; the decode in INT8) "
                   "-> <output>/sensitivity.json")
    p.add_argument("--export-only", action="store_true", help="qat: export --weights (a QAT checkpoint), no training")
    p.add_argument("-o", "--opt", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="config overrides, e.g. -o quant.algo=KL epochs=3")
    return p.parse_args(argv)


def run(args, log=print):
    from ppyolo_slim.config import load_config
    from ppyolo_slim.slim import quant
    quant.require_int8_support()
    if args.method == "ptq":
        cfg = load_config(args.config, args.opt)
        return quant.ptq(args.weights, args.output, cfg, log=log, sensitivity=args.sensitivity)
    train_dir = os.path.join(os.path.abspath(args.output), "train")
    cfg = load_config(args.config, list(args.opt) + ["quant.qat=true", f"output_dir={train_dir}",
                                                      f"weights={os.path.abspath(args.weights)}"])
    if args.export_only:
        return quant.qat_export(args.weights, args.output, cfg, log=log)
    from ppyolo_slim.engine.trainer import train
    last = os.path.join(train_dir, "last.pdparams")
    resume = last if os.path.isfile(os.path.join(train_dir, "last.state")) else None
    if resume:
        log(f"QAT: resuming {last}")
    summary = train(cfg, resume=resume, progress=sys.stderr.isatty())
    best = summary["best"] if os.path.isfile(summary["best"]) else summary["last"]
    return quant.qat_export(best, args.output, cfg, log=log)


def main(argv=None) -> int:
    args = parse_args(argv)
    from ppyolo_slim.config import ConfigError
    from ppyolo_slim.data import DataError
    from ppyolo_slim.model import CheckpointError, WeightShapeError
    from ppyolo_slim.slim.quant import QuantError
    try:
        run(args)
    except QuantError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (ConfigError, DataError, CheckpointError, WeightShapeError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
