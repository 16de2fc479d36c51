"""Our side of the peer comparison: one training step of ppyolo_slim's YOLOv5n on fixed
tensors, timed by phase, and Paddle's profiler over a few steps.

The step is the trainer's work without its data loading: forward, ComputeLoss, backward,
optimizer step (the trainer's three-group SGD) and EMA update, exactly what
_peer_worker.py times for ultralytics. The trainer adds per-step checks (finite
gradients, sparsity); benchmarks/train_throughput.py measures the trainer itself.
"""
from __future__ import annotations

import contextlib
import io
import re
import time
from typing import Dict, List

import numpy as np

import ppyolo_slim  # noqa: F401  (import order: before paddle)
import paddle


class OursTrainStep:
    def __init__(self, nc: int, img_size: int, images: np.ndarray, targets: np.ndarray,
                 config: str = "configs/base.yml", cpu_ops: str = "auto"):
        from ppyolo_slim.config import load_config
        from ppyolo_slim.engine.ema import ModelEMA
        from ppyolo_slim.engine.loss import ComputeLoss
        from ppyolo_slim.engine.optim import Optimizer
        from ppyolo_slim.model import ModelMeta, build_model
        cfg = load_config(config)
        paddle.seed(0)
        # Detect priors are set once, in YOLOv5.__init__ (as the trainer's fresh model)
        self.model = build_model(ModelMeta(nc=nc, names=[f"class{i}" for i in range(nc)], img_size=img_size))
        self.model.train()
        from ppyolo_slim.engine.cpu_ops import use_cpu_ops
        self.cpu_ops = use_cpu_ops(self.model, cpu_ops)   # as the trainer does on the CPU
        det = self.model.detect
        self.loss = ComputeLoss(det.anchors.numpy(), det.stride, nc, dict(cfg["loss"]), img_size)
        # the peer's optimizer (hyp.scratch-low, smart_optimizer): SGD, nesterov, lr0 0.01, as
        # configs/full.yml; base.yml's CPU default is AdamW, a different optimizer step
        opt_cfg = dict(cfg["optimizer"], type="SGD", nesterov=True, lr0=0.01)
        self.opt = Optimizer(self.model, opt_cfg, cfg["schedule"], int(cfg["epochs"]), 100)
        self.opt.set_step(10 ** 6, 0)   # past warmup: plain SGD with momentum, as the peer's
        self.ema = ModelEMA(self.model, cfg["ema"]["decay"], cfg["ema"]["tau"])
        self.x = paddle.to_tensor(images)
        self.t = paddle.to_tensor(targets)

    def step(self, times: Dict[str, List[float]] = None) -> None:
        t0 = time.perf_counter()
        preds = self.model(self.x)
        t1 = time.perf_counter()
        loss, _ = self.loss(preds, self.t)
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        self.opt.step()
        self.opt.clear_grad()
        self.ema.update(self.model)
        t4 = time.perf_counter()
        if times is not None:
            for k, a, b in (("forward", t0, t1), ("loss", t1, t2), ("backward", t2, t3),
                            ("optimizer_ema", t3, t4), ("step", t0, t4)):
                times.setdefault(k, []).append(1000 * (b - a))

    def steps(self, n: int) -> Dict[str, List[float]]:
        times: Dict[str, List[float]] = {}
        for _ in range(n):
            self.step(times)
        return times


_ROW = re.compile(r"^(?P<name>\S.*?)\s{2,}(?P<calls>\d+)\s+(?P<total>[\d.]+) / [\d.]+ / [\d.]+ / [\d.]+ / "
                  r"(?P<ratio>[\d.]+)")


def paddle_profile(fn, steps: int, top: int = 25) -> Dict[str, object]:
    """Paddle's profiler over ``steps`` calls of ``fn``: the operator table (CPU total per
    step, forward ops as '<op> dygraph', backward as '<Op>GradNode...') and the
    forward/backward split of the model summary. Nothing is written to disk."""
    import paddle.profiler as profiler
    fn()
    prof = profiler.Profiler(targets=[profiler.ProfilerTarget.CPU], on_trace_ready=lambda p: None)
    prof.start()
    for _ in range(steps):
        fn()
        prof.step()
    prof.stop()
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        prof.summary(sorted_by=profiler.SortedKeys.CPUTotal, op_detail=False, thread_sep=False, time_unit="ms")
    text = buf.getvalue()
    model, ops = {}, []
    section = None
    for line in text.splitlines():
        if "Model Summary" in line:
            section = "model"
        elif "Operator Summary" in line:
            section = "op"
        elif "Summary" in line and "---" in line:
            section = None
        m = _ROW.match(line.strip()) if section else None
        if not m:
            continue
        name = m["name"].strip()
        if section == "model" and name in ("Forward", "Backward", "Optimization", "ProfileStep"):
            model[name.lower() + "_ms_per_step"] = float(m["total"]) / steps
        elif section == "op":
            ops.append({"op": name, "calls_per_step": int(m["calls"]) / steps,
                        "ms_per_step": float(m["total"]) / steps, "share_pct": float(m["ratio"])})
    return {"phases": model, "top_ops": ops[:top]}
