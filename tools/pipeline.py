"""The whole job on the embedded default data: python tools/pipeline.py

The dense model (the shipped checkpoint on the embedded set) -> sparse training (the cut's
channels driven to exactly zero) -> 8x pruning -> fine-tuning with the dense model as
distillation teacher -> evaluation of each -> export (ONNX, Paddle
Inference) -> TensorRT network (built where TensorRT and a GPU exist, else checked on the
CPU) -> summary table (OUTPUT/summary.md, summary.json, map_vs_flops.png).

Rerun the same command to continue after an interruption. Scale up for real runs with
-o pipeline.scale=10 (epochs x10) or -o data=my_data.yaml.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ppyolo_slim  # noqa: E402,F401  (before paddle: import order)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output", default="output/pipeline",
                    help="folder for every stage's outputs, the summary and pipeline_state.json "
                         "(default output/pipeline)")
    # extend + nargs="+": both `-o a=1 -o b=2` and PaddleDetection's `-o a=1 b=2`
    ap.add_argument("-o", "--opt", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                    help="override a config key in every stage's config, e.g. -o pipeline.scale=10 "
                         "data=my.yaml. The fine-tune stage's weights= (the pruned model) and epochs= "
                         "(pipeline.finetune_epochs x pipeline.scale) are set after these, so -o epochs=N "
                         "changes the sparse stage only (x pipeline.scale)")
    ap.add_argument("--sparse-config", default="configs/sparse.yml",
                    help="config of the sparse training stage; pipeline.* and the img_size and export.* "
                         "of the export, deploy and summary stages are read from it too "
                         "(default configs/sparse.yml; e.g. configs/full.yml)")
    ap.add_argument("--finetune-config", default="configs/finetune.yml",
                    help="config of the fine-tuning stage (default configs/finetune.yml)")
    ap.add_argument("--fresh", action="store_true", help="start over, ignoring a previous run's state")
    from ppyolo_slim.pipeline import STAGES
    ap.add_argument("--until", choices=list(STAGES),
                    help="stop after this stage; the same command without --until continues from there")
    ap.add_argument("--no-progress", action="store_true",
                    help="no per-batch progress bars or per-epoch mAP lines (stage log lines only)")
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from ppyolo_slim import cli
    from ppyolo_slim.config import ConfigError
    from ppyolo_slim.pipeline import Pipeline
    try:   # settings and the state of an earlier run: wrong ones are the command's fault
        pipeline = Pipeline(args.output, args.opt, fresh=args.fresh, progress=not args.no_progress,
                            configs={"sparse": args.sparse_config, "finetune": args.finetune_config})
    except (ConfigError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return cli.USAGE
    try:
        state = pipeline.run(args.until)
    except ModuleNotFoundError as e:    # a missing PaddleSlim, said by run() before any stage ran
        if e.name != "paddleslim":
            raise
        print(f"error: {e}", file=sys.stderr)
        return cli.USAGE
    except (ConfigError, ValueError, OSError, RuntimeError) as e:   # OSError: full disk, permissions
        print(f"error: {e}", file=sys.stderr)
        return cli.FAILED
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to continue where it stopped", file=sys.stderr)
        return cli.INTERRUPTED
    summary = state["done"].get("summary")
    if summary:
        print(f"pipeline finished in {summary['wall_s'] / 60:.1f} min of stage time; "
              f"table in {summary['paths']['md']}; dashboards: {cli.dashboard_command(args.output)}")
    return cli.OK


if __name__ == "__main__":
    sys.exit(main())
