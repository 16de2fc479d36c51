"""Entry used by tools/train.py: one process, a rank of paddle.distributed.launch (GPUs),
or ``nprocs`` CPU processes on the gloo backend (paddle.distributed.spawn)."""
from __future__ import annotations

import os
import sys
from typing import Optional

from ..config import Config


DEFAULT_CONFIG = "configs/sparse.yml"


def train_config(config: Optional[str], overrides, resume: Optional[str]) -> Config:
    """The config of a training run. ``--resume PATH`` without ``-c`` continues with the config
    saved in the run's state (its folder as output_dir), as ultralytics' --resume does; with
    ``-c`` the trainer refuses a config that differs from the run's in what defines it."""
    from ..config import ConfigError, config_from_dict, load_config
    if not resume or config:
        return load_config(config or DEFAULT_CONFIG, overrides)
    from ..model.weights import CheckpointError
    from .checkpoint import load_checkpoint, state_path
    try:
        saved = load_checkpoint(resume)["train"].get("config")
    except CheckpointError as e:
        raise ConfigError(str(e)) from None
    if not saved:
        raise ConfigError(f"{state_path(resume)} holds no config (written by an older version): "
                          f"give the run's config with -c")
    folder = os.path.dirname(os.path.abspath(resume))
    return config_from_dict(saved, f"{state_path(resume)} (the run's saved config)",
                            list(overrides) + [f"output_dir={folder}"])


class RunExists(ValueError):
    pass


def refuse_to_overwrite_a_run(cfg: Config) -> None:
    state = os.path.join(cfg["output_dir"], "last.state")
    if os.path.isfile(state):
        raise RunExists(f"{cfg['output_dir']} already holds a training run ({state}). Continue it "
                        f"with --resume, start over in it with --exist-ok, or pick another folder with "
                        f"-o output_dir=PATH")


def check_train_inputs(cfg: Config, resume) -> None:
    """The weights and the training state named, checked before any slow work: a missing file
    or one of another kind (an .onnx, a last.state as weights) is reported at once."""
    from ..model.weights import CheckpointError, check_weights_file
    from .checkpoint import state_path
    last = _resume_path(cfg, resume)
    if last is not None:
        if not os.path.isfile(state_path(last)):
            raise CheckpointError(f"{state_path(last)}: no training state beside {last}; only files written "
                                  f"by tools/train.py (last.pdparams + last.state) can be resumed")
    elif cfg["weights"]:
        check_weights_file(cfg["weights"])


def _resume_path(cfg: Config, resume):
    if resume is None:
        return None
    return resume or os.path.join(cfg["output_dir"], "last.pdparams")


def _run(cfg: Config, resume, progress: bool, rank: int, world: int) -> int:
    from ..model.weights import CheckpointError
    from .trainer import TrainingDiverged, train
    try:
        summary = train(cfg, resume=_resume_path(cfg, resume), rank=rank, world_size=world,
                        progress=progress)
    except (TrainingDiverged, CheckpointError, ValueError, OSError, RuntimeError) as e:
        # OSError: a full disk or a folder without write permission (CheckpointWriteError names the file)
        print(f"error{f' (rank {rank})' if world > 1 else ''}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if rank == 0:
            state = os.path.join(cfg["output_dir"], "last.state")
            print("interrupted; " + (f"{state} is complete: continue with --resume" if os.path.isfile(state)
                                     else "no checkpoint was written yet"), file=sys.stderr)
        return 130
    if rank == 0:
        from ..cli import dashboard_command
        print(f"done: {summary['epochs']} epochs in {summary['train_s']:.0f} s; best mAP@0.5:0.95 "
              f"{summary['best_fitness']:.4f}; weights {summary['best']} and {summary['last']}")
        if cfg["log"]["visualdl"]:
            print(f"dashboards: {dashboard_command(cfg['output_dir'])}")
    return 0


def _spawned(cfg_dict: dict, resume, progress: bool) -> None:
    import paddle.distributed as dist
    dist.init_parallel_env()
    code = _run(Config(cfg_dict), resume, progress, dist.get_rank(), dist.get_world_size())
    if code:
        raise SystemExit(code)


def train_main(cfg: Config, resume=None, progress: bool = True, nprocs: Optional[int] = None) -> int:
    if nprocs and nprocs > 1:
        import paddle.distributed as dist
        if cfg["device"] not in ("auto", "cpu"):
            print("error: --nprocs starts CPU processes (gloo); on GPUs use "
                  "python -m paddle.distributed.launch --gpus 0,1 tools/train.py ...", file=sys.stderr)
            return 2
        cfg = Config(dict(cfg, device="cpu"))
        # scanned (and the embedded set generated) once here: the ranks then read the cache
        # instead of racing to write it; rank 0 alone prints the data summary
        from ..data import DataError, load_data
        try:
            load_data(cfg["data"], verbose=False)
        except DataError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        # the ranks' gloo connection chatter (glog INFO lines) would interleave with the report
        os.environ.setdefault("GLOG_minloglevel", "1")
        try:
            dist.spawn(_spawned, args=(dict(cfg), resume, progress), nprocs=nprocs, backend="gloo")
        except Exception as e:   # a child's failure surfaces here with its traceback printed above
            print(f"error: multi-process training failed: {e}", file=sys.stderr)
            return 1
        return 0
    world = int(os.environ.get("PADDLE_TRAINERS_NUM", "1"))
    rank = 0
    if world > 1:
        import paddle.distributed as dist
        dist.init_parallel_env()
        rank = dist.get_rank()
    return _run(cfg, resume, progress, rank, world)
