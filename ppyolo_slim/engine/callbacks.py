"""Trainer callbacks: named hooks where other components join a training run.

The trainer calls, in order: ``on_train_start``; per batch ``extra_loss`` (a term added to the
detection loss, e.g. distillation), ``on_after_backward`` (gradients present, before the
optimizer step: the subgradient L1 form), ``on_after_step`` (after the optimizer step, before
the EMA update: proximal steps and masks); per epoch ``on_epoch_end`` (may add entries to the
epoch record) and ``on_save``. As ultralytics' ``Callbacks`` and PaddleDetection's
``ComposeCallback``, but typed hooks rather than strings.

Components that configure themselves from a config section register a factory here
(``@register_callback("sparsity")``); the trainer builds every registered callback whose
factory returns one. The engine does not import the components (slim/ imports engine/, never
the reverse): it loads the modules named in ``PLUGINS`` by name when a trainer starts, as
entry points would, so ``import ppyolo_slim.engine`` stays free of paddle and of slim/.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Dict, List, Optional, Tuple

Factory = Callable[[Any], Optional["Callback"]]   # (trainer) -> Callback or None
_FACTORIES: Dict[str, Factory] = {}
# modules whose import registers config-driven callbacks (sparsity + γ logging, distillation)
# and model hooks (quantization-aware training)
PLUGINS = ["ppyolo_slim.slim.sparsity", "ppyolo_slim.slim.distill", "ppyolo_slim.slim.quant"]
_MODEL_HOOKS: Dict[str, Any] = {}


class ModelHook:
    """Changes the model itself before the optimizer and EMA see it (QAT's fake quantization):
    ``split_state`` takes what the float model cannot load out of a checkpoint's state,
    ``wrap`` changes the built model and may use it."""

    def enabled(self, cfg) -> bool:
        return False

    def split_state(self, cfg, state):
        return state, None

    def wrap(self, cfg, model, extra) -> None: ...


def register_model_hook(name: str):
    def deco(cls):
        _MODEL_HOOKS[name] = cls()
        return cls
    return deco


def _load_plugins() -> None:
    for name in PLUGINS:
        importlib.import_module(name)


def model_hooks(cfg) -> List[ModelHook]:
    _load_plugins()
    return [h for h in _MODEL_HOOKS.values() if h.enabled(cfg)]


class Callback:
    """Override the hooks you need; each gets the trainer (``trainer.core`` is the model,
    ``trainer.ema``, ``trainer.optimizer``, ``trainer.cfg``, ``trainer.logger``)."""

    def on_train_start(self, trainer) -> None: ...

    def extra_loss(self, trainer, imgs, preds) -> Optional[Tuple[Any, Dict[str, float]]]:
        """(a scalar loss tensor to add, {name: value} for logs), or None."""
        return None

    def on_after_backward(self, trainer, epoch_float: float) -> None: ...

    def on_after_step(self, trainer, epoch_float: float) -> None: ...

    def on_epoch_end(self, trainer, epoch: int, record: Dict[str, Any]) -> None: ...

    def on_save(self, trainer, epoch: int, record: Dict[str, Any]) -> None: ...


def register_callback(name: str) -> Callable[[Factory], Factory]:
    """Register ``factory(trainer) -> Callback | None`` under ``name`` (a config section)."""
    def deco(factory: Factory) -> Factory:
        _FACTORIES[name] = factory
        return factory
    return deco


def registered_callbacks(trainer) -> List[Callback]:
    """The callbacks the registered factories make for this trainer, in registration order."""
    _load_plugins()
    out = []
    for factory in _FACTORIES.values():
        cb = factory(trainer)
        if cb is not None:
            out.append(cb)
    return out


class CallbackList(Callback):
    """Calls every callback's hook in turn (a callback may define only some hooks, duck-typed);
    ``extra_loss`` terms are summed."""

    def __init__(self, callbacks: List[Any]):
        self.callbacks = list(callbacks)

    def __iter__(self):
        return iter(self.callbacks)

    def _each(self, hook: str, *args) -> None:
        for cb in self.callbacks:
            fn = getattr(cb, hook, None)
            if fn is not None:
                fn(*args)

    def on_train_start(self, trainer):
        self._each("on_train_start", trainer)

    def extra_loss(self, trainer, imgs, preds):
        total, items = None, {}
        for cb in self.callbacks:
            fn = getattr(cb, "extra_loss", None)
            out = fn(trainer, imgs, preds) if fn is not None else None
            if out is None:
                continue
            loss, logs = out
            total = loss if total is None else total + loss
            items.update(logs)
        return None if total is None else (total, items)

    def on_after_backward(self, trainer, epoch_float):
        self._each("on_after_backward", trainer, epoch_float)

    def on_after_step(self, trainer, epoch_float):
        self._each("on_after_step", trainer, epoch_float)

    def on_epoch_end(self, trainer, epoch, record):
        self._each("on_epoch_end", trainer, epoch, record)

    def on_save(self, trainer, epoch, record):
        self._each("on_save", trainer, epoch, record)
