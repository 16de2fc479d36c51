"""Network slimming: L1 sparsity on BN scales (training), then channel pruning with PaddleSlim.

Names load on first use (the pruning side loads PaddleSlim then): composing a config
imports this package's section modules (``selection``, ``*_config``) without paddle.

Where PaddleSlim 2.6 is extended, and why (each through its own hook, none bypassed):

* ``workers.py``: ``silu`` and ``concat`` workers in ``PRUNE_WORKER`` (it has neither, and
  drops the collections it cannot walk without an error). The concat
  worker searches its consumers with a private ``visited`` record: PaddleSlim's shared one
  is keyed by (op, variable), not by the offset transform, so a concat's second input never
  reached the consumer (the "cv3 kept 24 inputs, concat gave 16" bug).
* ``pruner.py``: ``ChannelPruner(FilterPruner)`` overrides ``cal_mask`` (the criterion hook)
  with |gamma|, tied channels ranked by their largest |gamma|, one global threshold; it
  checks every Conv-BN is in exactly one collection (``PruneCoverageError`` otherwise).
* ``compensate.py``: folds removed channels' constant output into consumers before the plan
  is applied (PaddleSlim only cuts tensors).
* ``_compat.py``: ``import_paddleslim`` from ``ppyolo_slim/compat.py`` (no ``pkg_resources`` on
  setuptools >= 81; PaddleSlim's tracer on Paddle 3).

PaddleSlim 2.6 behaviours worked around here: its tracer leaves Paddle in static mode if
the trace raises (restored); tracing in eval mode would cache static tensors in Detect's
grid cache (we trace in train mode; no op runs); applied plans leave ``*_backup`` buffers in
the model's state dict (we keep only the model's own keys and rebuild from the shapes);
``FilterPruner.sensitive`` pickles its status to ``sen_file`` even when it is None (we pass
a temporary file), mutates its ``skip_vars=[]`` default (we pass a list) and returns a
cached ``Status`` object on a second call (we reset it).
"""
_LAZY = {
    "SparsityL1": "sparsity", "gamma_stats": "sparsity", "prunable_bns": "sparsity",
    "ChannelPruner": "pruner", "prune_model": "pruner", "PruneCoverageError": "pruner",
    "PruneError": "pruner", "PruneResult": "pruner", "undo_pruning": "pruner",
    "fold_removed_channels": "compensate", "CompensationError": "compensate",
    "sensitivity": "sensitivity", "write_sensitivity": "sensitivity",
    "prune_checkpoint": "workflow", "val_evaluator": "workflow",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_LAZY)
