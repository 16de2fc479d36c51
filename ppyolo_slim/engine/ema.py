"""Model EMA as ultralytics keeps it: decay ramps up as d * (1 - exp(-updates / tau))."""
from __future__ import annotations

import copy
import math

import paddle


class ModelEMA:
    def __init__(self, model, decay: float = 0.9999, tau: float = 2000, updates: int = 0):
        self.ema = copy.deepcopy(model)
        self.ema.eval()
        for p in self.ema.parameters():
            p.stop_gradient = True
        self.updates = updates
        self.decay_fn = lambda x: decay * (1 - math.exp(-x / tau))

    @paddle.no_grad()
    def update(self, model) -> None:
        self.updates += 1
        d = self.decay_fn(self.updates)
        src = model.state_dict()
        for k, v in self.ema.state_dict().items():
            if v.dtype in (paddle.float32, paddle.float16, paddle.float64):
                v.set_value(v * d + (1 - d) * src[k].detach())

    def state_dict(self):
        return self.ema.state_dict()
