#!/usr/bin/env python
"""Score a model on the val split of its data with pycocotools' COCOeval.

  python tools/eval.py -c configs/base.yml --weights output/train/best.pdparams
  python tools/eval.py --weights best.pdparams --data data/my.yaml --img-size 640

Writes eval.json beside the weights (or to --output) and prints a per-class table; with --data
naming another data set than the weights were trained on: eval_<data>.json, so the weights'
own report is kept.
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
    p.add_argument("-c", "--config", help="config YAML (data, img_size, eval.* thresholds)")
    add_predictor_args(p)
    p.add_argument("--data", help="data YAML / COCO json spec / 'shapes' (overrides the config's data; "
                   "default without -c: the data the weights were trained on, from their metadata)")
    p.add_argument("--img-size", type=int, help="input size (default: the config's img_size, "
                   "or the model's own size without -c)")
    p.add_argument("--batch-size", type=int, help="default: the config's eval.batch_size")
    p.add_argument("--conf-thres", type=float, help="default: the config's eval.conf_thres (0.001)")
    p.add_argument("--iou-thres", type=float, help="NMS IoU; default: the config's eval.iou_thres (0.6)")
    p.add_argument("--max-det", type=int, help="detections kept per image; default: eval.max_det (300)")
    p.add_argument("--output", help="report path (default: beside the model, eval.json; "
                                    "eval_<data>.json for another data set given with --data)")
    # extend + nargs="+": both `-o a=1 -o b=2` and PaddleDetection's `-o a=1 b=2`
    p.add_argument("-o", "--opt", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="config overrides, e.g. -o eval.batch_size=8 eval.conf_thres=0.01 (repeatable)")
    return p.parse_args(argv)


def trained_on(predictor, model_path=None):
    """The data the weights were trained on, from their metadata (a pruned model's parent's), or None.
    An exported model (ONNX, Paddle Inference) has it in the export_report.json beside it."""
    made_by = getattr(getattr(getattr(predictor, "model", None), "meta", None), "made_by", None)
    if made_by is None and model_path:
        folder = model_path if os.path.isdir(model_path) else os.path.dirname(os.path.abspath(model_path))
        try:
            import json
            with open(os.path.join(folder, "export_report.json"), "r", encoding="utf-8") as f:
                made_by = json.load(f).get("made_by")
        except (OSError, ValueError, AttributeError):
            made_by = None
    while isinstance(made_by, dict):
        if made_by.get("data"):
            return made_by["data"]
        made_by = made_by.get("parent")
    return None


def _model_path(args):
    return args.weights or args.onnx or args.model_dir or args.engine


def default_data(args, cfg, predictor):
    """Without --data: the config's data when -c or -o data= names it, else the data the
    weights were trained on (their metadata) when that file is here, else the config default
    (the embedded shapes set)."""
    if args.config or any(o.startswith("data=") for o in args.opt):
        return cfg.data
    own = trained_on(predictor, _model_path(args))
    return own if own and os.path.isfile(str(own)) else cfg.data


def report_name(data_arg, data_source, own_data) -> str:
    """eval.json for the weights' own data; another data set's report gets its own name, so it
    does not overwrite that one: eval_<data>.json."""
    def same(a, b):
        return a == b or (os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b))
    if not data_arg or (own_data and same(str(data_source), str(own_data))):
        return "eval.json"
    stem = os.path.splitext(os.path.basename(os.path.normpath(data_arg)))[0] or "data"
    if stem in ("data", "dataset", "coco"):     # say which one: the folder's name too
        stem = f"{os.path.basename(os.path.dirname(os.path.abspath(data_arg)))}_{stem}"
    return f"eval_{stem}.json"


def main(argv=None) -> int:
    args = parse_args(argv)
    from ppyolo_slim.config import ConfigError, load_config, override
    from ppyolo_slim.engine.evaluate import EvalConfig, evaluate_on_data, format_table
    from ppyolo_slim.engine.predict import PredictorUnavailable, check_img_size, predictor_from_args
    from ppyolo_slim.model import CheckpointError, WeightShapeError
    from ppyolo_slim.utils.io import write_json

    flags = {"eval.batch_size": args.batch_size, "eval.conf_thres": args.conf_thres,
             "eval.iou_thres": args.iou_thres, "eval.max_det": args.max_det}
    try:   # the flags as overrides, after any -o: a flag wins
        cfg = load_config(args.config, list(args.opt) + [override(k, v) for k, v in flags.items() if v is not None])
        predictor = predictor_from_args(args)
        size = args.img_size or (cfg.img_size if args.config or any(o.startswith("img_size=") for o in args.opt)
                                 else (predictor.img_size or cfg.img_size))
        img_size, warning = check_img_size(size, predictor)
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
        ev = EvalConfig.of(cfg)
        report = evaluate_on_data(
            predictor, args.data or default_data(args, cfg, predictor), img_size, batch_size=ev.batch_size,
            conf_thres=ev.conf_thres, iou_thres=ev.iou_thres, max_det=ev.max_det, progress=sys.stderr.isatty())
    except (ConfigError, CheckpointError, WeightShapeError, PredictorUnavailable,
            FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    model_path = _model_path(args)
    out = args.output or os.path.join(
        model_path if os.path.isdir(model_path) else os.path.dirname(os.path.abspath(model_path)),
        report_name(args.data, report["data_source"], trained_on(predictor, model_path)))
    write_json(out, report)
    print(format_table(report))
    print(f"mAP@0.5:0.95 {report['map50_95']:.4f}  mAP@0.5 {report['map50']:.4f}  "
          f"({report['num_images']} images, {report['time_s']:.1f} s)  -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
