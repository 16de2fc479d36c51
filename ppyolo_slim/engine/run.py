"""Entry used by tools/train.py: one process, a rank of paddle.distributed.launch (GPUs),
or ``nprocs`` CPU processes on the gloo backend (paddle.distributed.spawn)."""
from __future__ import annotations

import os
import sys
from typing import Optional

from ..config import Config


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
        print(f"done: {summary['epochs']} epochs in {summary['train_s']:.0f} s; best mAP@0.5:0.95 "
              f"{summary['best_fitness']:.4f}; weights {summary['best']} and {summary['last']}")
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
            raise SystemExit("--nprocs starts CPU processes (gloo); on GPUs use "
                             "python -m paddle.distributed.launch --gpus 0,1 tools/train.py ...")
        cfg = Config(dict(cfg, device="cpu"))
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
