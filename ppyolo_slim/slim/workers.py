"""PaddleSlim 2.6 prune workers for the ops a YOLOv5 uses and PaddleSlim does not know.

PaddleSlim's graph walker (``paddleslim/prune/prune_worker.py``) finds which tensors must
shrink together when a conv loses output channels: one *worker* class per op type, looked
up in the ``PRUNE_WORKER`` registry by the op's name. An op without a worker aborts the
walk (``UnsupportOpError``) and the whole collection is dropped *without an error*: with
no ``silu`` worker a YOLOv5 gives "Found 0 collections". Importing this
module registers:

``silu``
    elementwise, channels pass straight through (as PaddleSlim's own ``relu``).
``concat``
    maps channel masks by offset, in both directions, with the transform PaddleSlim's
    ``FilterPruner._transform_mask`` understands (``src_start/src_end`` slice the source
    mask, ``target_start/target_end`` place it in a ``target_len`` mask of ones):
    input i -> output: ``{src 0..c_i, target off_i..off_i+c_i, len C}``;
    output -> input j: ``{src off_j..off_j+c_j, target 0..c_j, len c_j}``.

Why ``concat`` walks its consumers with a fresh ``visited`` record
------------------------------------------------------------------
``PruningCollections.create_pruning_collections`` shares one ``visited`` dict across the
whole walk, keyed by (op, variable) and *not* by the transform that brought the walk
there. A concat output is reached once per input, each time with a different offset
transform; with the shared record only the first arrival reaches the consumer conv and
the other inputs' slices are silently lost. That is the bug seen with PaddleSlim alone ("C3.cv3 kept 24
input channels while its concat delivered 16"), and it hits inside one collection too
(SPPF: four slices of the same cv1 output). So, going from an input to the output, this
worker searches the consumers with a record of its own, seeded so the walk cannot come
back through this concat. Downstream of a concat output there are only consumers of
those channels (conv inputs, through pooling/resizing/activations), so the private
record cannot split a collection. The shared record still marks the concat's input, so
every input is entered once.
"""
from __future__ import annotations

import logging

from ._compat import import_paddleslim

import_paddleslim()
from paddleslim.prune.prune_worker import (PRUNE_WORKER, PruneWorker,  # noqa: E402
                                           activation)

_logger = logging.getLogger(__name__)


class silu(activation):  # noqa: N801  (the class name is the op type PaddleSlim looks up)
    """SiLU keeps every channel where it is."""


class concat(PruneWorker):  # noqa: N801
    """Channel masks through a concat, by offset, in both directions."""

    def _axis(self) -> int:
        axis = self.op.attr("axis")
        rank = len(self.op.outputs("Out")[0].shape())
        return axis + rank if axis < 0 else axis

    def _prune(self, var, pruned_axis, transforms):
        inputs = self.op.inputs("X")
        out = self.op.outputs("Out")[0]
        axis = self._axis()
        if pruned_axis != axis:
            # pruning another axis: every input and the output lose the same indices
            for v in inputs + [out]:
                if v.name() != var.name():
                    self._visit_and_search(v, pruned_axis, transforms)
            return
        sizes = [v.shape()[axis] for v in inputs]
        if any(s is None or s < 0 for s in sizes):
            raise ValueError(f"concat {out.name()}: input channel counts must be static, got {sizes}")
        offsets = [sum(sizes[:i]) for i in range(len(sizes))]
        total = sum(sizes)
        if var.name() == out.name():
            for v, off, c in zip(inputs, offsets, sizes):
                t = {"src_start": off, "src_end": off + c,
                     "target_start": 0, "target_end": c, "target_len": c}
                self._visit_and_search(v, axis, transforms + [t])
            return
        hits = [i for i, v in enumerate(inputs) if v.name() == var.name()]
        for i in hits:   # the same tensor may be concatenated more than once
            t = {"src_start": 0, "src_end": sizes[i],
                 "target_start": offsets[i], "target_end": offsets[i] + sizes[i],
                 "target_len": total}
            self._search_consumers(out, axis, transforms + [t])

    def _search_consumers(self, out, axis, transforms):
        shared = self.visited
        self._visit(out, axis)                       # shared record: out was reached
        own = {}
        try:
            self.visited = own
            self._visit(out, axis)                   # private record: never walk back here
            for op in out.outputs():
                self._prune_op(op, out, axis, transforms, visited=own)
        finally:
            self.visited = shared


def register() -> None:
    """Put our workers in PaddleSlim's registry (idempotent). A worker of the same name that
    PaddleSlim itself might ship later is replaced, loudly: ours are the tested ones."""
    for cls in (silu, concat):
        have = PRUNE_WORKER.get(cls.__name__)
        if have is cls:
            continue
        if have is not None:
            _logger.warning("replacing PaddleSlim's %r prune worker (%s) with ppyolo_slim's",
                            cls.__name__, have)
            PRUNE_WORKER.module_dict[cls.__name__] = cls
        else:
            PRUNE_WORKER.register(cls)


register()
