"""Knowledge distillation while fine-tuning: the unpruned model as a frozen teacher.

The output loss follows PaddleDetection's ``DistillYOLOv3Loss`` (Detect outputs of teacher and
student compared cell by cell, the box and class terms weighted by the teacher's objectness,
so the background, where the teacher sees nothing, does not drown the signal), with one
change: each term is a binary KL divergence KL(sigmoid(t) || sigmoid(s)) rather than a
BCE against sigmoid(t), so the loss is exactly zero when the student equals the teacher (a
BCE keeps the teacher's entropy as a floor). Scaled by the batch size, as the detection loss.

PaddleSlim's dygraph ``Distill`` wraps models with hooks and its losses (L1, MSE, KL over
whole tensors) have no objectness weighting; a loss of our own, fed by a trainer callback,
is smaller than adapting it. Channel-wise feature distillation (CWD) of the Detect inputs is
not built: a pruned student's Detect inputs have fewer channels than the teacher's.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import paddle
import paddle.nn.functional as F

from ..engine.callbacks import Callback, register_callback
from .distill_config import DistillConfig


def _binary_kl(s_logit: paddle.Tensor, t_prob: paddle.Tensor) -> paddle.Tensor:
    """KL(Bernoulli(t) || Bernoulli(sigmoid(s))) per element: BCE(s, t) - H(t) >= 0."""
    eps = 1e-7
    t = paddle.clip(t_prob, eps, 1 - eps)
    entropy = -(t * paddle.log(t) + (1 - t) * paddle.log(1 - t))
    return F.binary_cross_entropy_with_logits(s_logit, t_prob, reduction="none") - entropy


def output_distill_loss(student: Sequence[paddle.Tensor], teacher: Sequence[paddle.Tensor],
                        balance: Sequence[float] = (4.0, 1.0, 0.4)) -> paddle.Tensor:
    """Sum over Detect levels of obj KL (every cell, level-balanced as YOLOv5's objectness) plus
    box and class KL weighted by the teacher's objectness; times the batch size. Raw maps
    ``[B, na, ny, nx, 5+nc]`` (train-mode Detect outputs); gradients reach the student only."""
    if len(student) != len(teacher):
        raise ValueError(f"distill: the student has {len(student)} Detect levels, the teacher {len(teacher)}")
    total = paddle.zeros([1])
    for i, (s, t) in enumerate(zip(student, teacher)):
        if list(s.shape) != list(t.shape):
            raise ValueError(f"distill: Detect level {i} is {list(s.shape)} in the student and "
                             f"{list(t.shape)} in the teacher (another nc or anchors?)")
        tp = F.sigmoid(t.detach())
        w = tp[..., 4]
        kl = _binary_kl(s, tp)
        wsum = w.sum() + 1e-6
        box = (kl[..., 0:4].mean(-1) * w).sum() / wsum
        cls = (kl[..., 5:].mean(-1) * w).sum() / wsum if s.shape[-1] > 5 else paddle.zeros([1])
        obj = kl[..., 4].mean() * float(balance[i] if i < len(balance) else 1.0)
        total = total + box + cls + obj
    return total.reshape([]) * student[0].shape[0]


class OutputDistill(Callback):
    """The ``distill:`` section: a frozen teacher whose Detect outputs the student matches."""

    def __init__(self, teacher, weight: float, balance: Sequence[float]):
        self.teacher, self.weight, self.balance = teacher, float(weight), list(balance)
        self.teacher.eval()
        self.teacher.detect.train()      # raw maps out, BN statistics frozen (eval) elsewhere
        for p in self.teacher.parameters():
            p.stop_gradient = True

    @classmethod
    def from_config(cls, trainer) -> "OutputDistill":
        from ..model import model_from_weights
        d = DistillConfig.of(trainer.cfg)
        if not d.teacher:
            raise ValueError("distill.enabled is true but distill.teacher names no weights file "
                             "(give the unpruned model: -o distill.teacher=output/sparse/best.pdparams)")
        teacher, meta = model_from_weights(d.teacher)
        if int(meta.nc) != trainer.nc:
            raise ValueError(f"distill.teacher {d.teacher}: a {meta.nc}-class model, but the data "
                             f"has {trainer.nc} classes; give the unpruned model trained on this data "
                             f"(-o distill.teacher=PATH) or -o distill.enabled=false")
        names = list(meta.names or [])
        if names and names != list(trainer.names):   # same count, other classes: it would teach the wrong ones
            i = next(i for i, (a, b) in enumerate(zip(names, trainer.names)) if a != b)
            raise ValueError(f"distill.teacher {d.teacher}: its class {i} is {names[i]!r}, the data's is "
                             f"{trainer.names[i]!r} (teacher classes {names}, data classes {list(trainer.names)}); "
                             f"the teacher must be trained on this data's classes, in the same order")
        return cls(teacher, d.weight, trainer.cfg["loss"]["balance"])

    def teacher_maps(self, imgs) -> List[paddle.Tensor]:
        with paddle.no_grad():
            return list(self.teacher(imgs))

    def extra_loss(self, trainer, imgs, preds):
        if self.weight == 0:
            return None
        loss = output_distill_loss(preds, self.teacher_maps(imgs), self.balance) * self.weight
        return loss, {"distill_loss": float(loss)}


@register_callback("distill")
def _distill(trainer) -> Optional[Callback]:
    return OutputDistill.from_config(trainer) if trainer.cfg["distill"]["enabled"] else None
