"""Training-speed levers on CPU (issue 17, item 4): can a Paddle training path reach oneDNN?

Paddle's eager (dygraph) mode runs its plain CPU conv kernels; the wheel also ships oneDNN
(paddle/libs/libdnnl.so.3), which the static-graph executor uses for an op whose
``use_mkldnn`` attribute is true. This script times, interleaved in one process (A B C, then
C B A, ...), forward + backward + SGD step of:

* ``micro``: the conv-BN-SiLU pair 32->64->64 channels (3x3 convs, batch 16, 64x64 px);
* ``model``: the whole YOLOv5n training step (ppyolo_slim.model.build_model and the project's
  ComputeLoss, batch 16, 256 px, random images and boxes);

under the candidates

* ``dygraph``: the eager step the trainer runs today;
* ``static``: a ``paddle.static`` program (loss, ``optimizer.minimize``) run by the Executor;
* ``static+onednn[OPS]``: the same with ``use_mkldnn`` set on the ops OPS (and their grads);
* ``to_static``: the model's forward through ``paddle.jit.to_static`` (the loss and the
  optimizer stay eager; forward and backward run in the static executor as one op);
* ``to_static+onednn[OPS]``: the same with ``use_mkldnn`` set on the traced program's ops
  before Paddle appends their backward (so the grad ops inherit it);
* ``... +FLAGS_use_mkldnn``: the global flag on around each step.

For each candidate it records the median step time, the ratio to dygraph (median of the
adjacent-pair ratios), the gradients of the first step against dygraph's from the same
weights and input, and -- in a child process run with ONEDNN_VERBOSE=1 -- which oneDNN
primitives one training step executed (kind, prop_kind, count, summed exec ms).

    python benchmarks/levers.py micro                    # Paddle in this interpreter
    /work/venv-p3/bin/python benchmarks/levers.py micro  # another Paddle: its own section
    python benchmarks/levers.py model
    python benchmarks/levers.py micro --quick            # 2 rounds, smoke test

Results are merged into benchmarks/results/levers.json under "<part> paddle <version> <ir>".
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

import numpy as np  # noqa: E402

MARK = "@@levers-step@@"
CONV = ("conv2d", "conv2d_grad", "depthwise_conv2d", "depthwise_conv2d_grad")
BN = ("batch_norm", "batch_norm_grad")
ACT = ("silu", "silu_grad")
OPSETS = {"conv": CONV, "conv+bn": CONV + BN, "conv+bn+silu": CONV + BN + ACT}


# --------------------------------------------------------------------------- helpers
def use_pir() -> bool:
    try:
        from paddle.framework import use_pir_api
        return bool(use_pir_api())
    except Exception:   # Paddle 2.x
        return False


def ir_name() -> str:
    return "pir" if use_pir() else "legacy-ir"


@contextlib.contextmanager
def flags(f: Dict[str, Any]):
    import paddle
    if not f:
        yield
        return
    old = paddle.get_flags(list(f))
    paddle.set_flags(f)
    try:
        yield
    finally:
        paddle.set_flags(old)


@contextlib.contextmanager
def static_mode():
    """The Executor runs only in static mode; the eager candidates need dygraph back."""
    import paddle
    paddle.enable_static()
    try:
        yield
    finally:
        paddle.disable_static()


def set_onednn_attrs(program, ops: Sequence[str]) -> int:
    """``use_mkldnn`` = True on every op of ``program`` whose type is in ``ops``; how many."""
    n = 0
    for block in program.blocks:
        for op in block.ops:
            if op.type in ops and op.has_attr("use_mkldnn"):
                op._set_attr("use_mkldnn", True)
                n += 1
    return n


_TO_STATIC_OPS: List[Optional[Sequence[str]]] = [None]   # the op set for the next traced program
_PATCHED = [False]


def patch_to_static():
    """Make the legacy-IR dy2static set ``use_mkldnn`` on its forward program's ops (the set in
    _TO_STATIC_OPS when the program is traced), before it appends the backward."""
    if _PATCHED[0]:
        return
    from paddle.jit.dy2static import partial_program as pp
    orig = pp.PartialProgramLayer.__init__

    def init(self, *a, **k):
        orig(self, *a, **k)
        ops = _TO_STATIC_OPS[0]
        if ops:
            self._levers_onednn_ops = set_onednn_attrs(self._origin_main_program, ops)
    orig_backward = pp.PartialProgramLayer._append_backward_desc

    def append_backward(self, main_program):
        program = orig_backward(self, main_program)
        if getattr(self, "_levers_onednn_ops", 0) and _FIX_GRAD_LAYOUT[0]:
            from paddle.base.framework import _dygraph_guard
            with _dygraph_guard(None):
                self._levers_fixed_grads = plain_layout_filter_grads(program)
        return program
    pp.PartialProgramLayer.__init__ = init
    pp.PartialProgramLayer._append_backward_desc = append_backward
    _PATCHED[0] = True


_FIX_GRAD_LAYOUT = [True]


def plain_layout_filter_grads(program) -> int:
    """A oneDNN conv2d_grad leaves the weight gradient in a oneDNN (blocked) layout. Inside a
    static program the next op's input transform undoes that; dy2st hands the tensor to eager
    as it is, and eager reads the blocked memory as OIHW (the values come out permuted). So
    each such output is renamed and an ``assign`` with the plain CPU kernel (whose input
    transform reorders to NCHW) writes the original name."""
    block = program.global_block()
    n, i = 0, 0
    while i < len(block.ops):
        op = block.ops[i]
        if (op.type in ("conv2d_grad", "depthwise_conv2d_grad") and op.has_attr("use_mkldnn")
                and op.attr("use_mkldnn") and "Filter@GRAD" in op.output_names):
            for name in op.output("Filter@GRAD"):
                v = block.var(name)
                tmp = block.create_var(name=name + "@onednn", shape=v.shape, dtype=v.dtype)
                op._rename_output(name, tmp.name)
                block._insert_op(i + 1, type="assign", inputs={"X": [tmp]}, outputs={"Out": [v]})
                i += 1
                n += 1
        i += 1
    return n


def trainable(params):
    return [p for p in params if not p.stop_gradient]


def grads_of(params) -> Dict[str, np.ndarray]:
    return {f"{i}:{tuple(p.shape)}": np.array(p.grad.numpy()) for i, p in enumerate(trainable(params))}


def compare(ref: Dict[str, np.ndarray], got: Dict[str, np.ndarray]) -> Dict[str, Any]:
    """Worst gradient error, each tensor's max |diff| scaled by its max |ref|; allclose at
    rtol 1e-4 / atol 1e-4 * max|ref| (float32, different summation orders)."""
    worst, ok = 0.0, True
    if set(ref) != set(got):
        return {"tensors": len(ref), "allclose": False, "error": f"gradients {sorted(got)} vs {sorted(ref)}"}
    for k, r in ref.items():
        g = got[k]
        scale = float(np.abs(r).max()) or 1.0
        err = float(np.abs(g - r).max()) / scale
        worst = max(worst, err)
        ok &= bool(np.allclose(g, r, rtol=1e-4, atol=1e-4 * scale))
    return {"tensors": len(ref), "max_err_rel_to_max": worst, "allclose": ok}


# --------------------------------------------------------------------------- custom op


def eager_step(m, opt, fwd_wrap, f, n_op, loss_of, x):
    """(step(keep) -> grads or None, the first step's grads): forward (through ``fwd_wrap`` if
    given), ``loss_of(output)``, backward, optimizer step, under ``flags(f)``."""
    fwd = fwd_wrap(m) if fwd_wrap else m

    def step(keep=False):
        with flags(f or {}):
            loss = loss_of(fwd(x))
            loss.backward()
            g = grads_of(m.parameters()) if keep else None
            opt.step()
            opt.clear_grad()
            float(loss)
        return g
    if n_op is not None:
        step.convs_on_custom_op = n_op
    return step, step(keep=True)


def onednn_op(include: str):
    """The trainer's oneDNN conv op (ppyolo_slim/engine/cpu_ops/onednn_conv.cc), built as the
    trainer builds it, against the wheel's own libdnnl.so.3. ``include``: oneDNN's devel
    headers (the wheel ships only shims), e.g. ``pip download onednn-devel-cpu-gomp==2023.2.0
    --no-deps`` unpacked: its ``.data/data/include``; used when it holds them, else the
    trainer's search (the venv's include/)."""
    from ppyolo_slim.engine import cpu_ops
    include = os.path.abspath(include)
    if os.path.isfile(os.path.join(include, "oneapi", "dnnl", "dnnl.hpp")):
        os.environ[cpu_ops.INCLUDE_ENV] = include
    return cpu_ops.conv_module()


def use_onednn_op(model, include: str, plain: int = 0, min_kernel: int = 1) -> int:
    """Every conv of ``model`` the op computes (``cpu_ops.conv_fits``, kernel >= ``min_kernel``)
    computes through it, activations in the primitives' layouts (``plain`` 0) or kept NCHW (1);
    the bias (Detect's) is added eagerly. The input gradient is skipped for an input that needs
    none (the image). Returns how many convs were switched."""
    from ppyolo_slim.engine.cpu_ops import conv_fits, conv_padding
    op = onednn_op(include)
    n = 0
    for layer in model.sublayers(include_self=True):
        if not conv_fits(layer, min_kernel):
            continue

        def fwd(x, layer=layer, s=int(layer._stride[0]), p=conv_padding(layer)):
            y = op.onednn_conv2d(x, layer.weight, s, p, plain, 0 if x.stop_gradient else 1)
            if layer.bias is not None:
                y = y + layer.bias.reshape([1, -1, 1, 1])
            return y
        layer.forward = fwd
        n += 1
    return n


def silu_op():
    """The trainer's SiLU op (ppyolo_slim/engine/cpu_ops/silu_op.cc), built as the trainer builds it."""
    from ppyolo_slim.engine.cpu_ops import silu_module
    return silu_module()


def use_silu_op(model) -> int:
    """Every nn.Silu of ``model`` computes through the custom op. Returns how many."""
    import paddle.nn as nn
    op, n = silu_op(), 0
    for layer in model.sublayers(include_self=True):
        if isinstance(layer, nn.Silu):
            layer.forward = op.silu_op
            n += 1
    return n


# --------------------------------------------------------------------------- micro
def micro_layers(fmt="NCHW"):
    import paddle.nn as nn
    return nn.Sequential(nn.Conv2D(32, 64, 3, 1, 1, bias_attr=False, data_format=fmt),
                         nn.BatchNorm2D(64, data_format=fmt), nn.Silu(),
                         nn.Conv2D(64, 64, 3, 1, 1, bias_attr=False, data_format=fmt),
                         nn.BatchNorm2D(64, data_format=fmt), nn.Silu())


class Micro:
    def __init__(self, a):
        rs = np.random.RandomState(0)
        self.x = rs.randn(a.batch, 32, a.size, a.size).astype("float32")
        self.w = rs.randn(a.batch, 64, a.size, a.size).astype("float32")   # loss = mean(y * w)
        import paddle
        paddle.seed(0)
        self.init = [p.numpy() for p in micro_layers().parameters()]
        self.init_shapes = [tuple(p.shape) for p in trainable(micro_layers().parameters())]
        self.include = a.onednn_include
        self.lr = 0.01

    def _dy_model(self):
        import paddle
        m = micro_layers()
        for p, v in zip(m.parameters(), self.init):
            p.set_value(v)
        return m, paddle.optimizer.SGD(self.lr, parameters=m.parameters())

    def eager(self, fwd_wrap=None, f=None, op_plain=None) -> Tuple[Callable, Dict]:
        import paddle
        m, opt = self._dy_model()
        n_op = use_onednn_op(m, self.include, op_plain) if op_plain is not None else None
        x, w = paddle.to_tensor(self.x), paddle.to_tensor(self.w)
        return eager_step(m, opt, fwd_wrap, f, n_op, lambda out: (out * w).mean(), x)

    def static(self, ops=(), f=None, fmt="NCHW") -> Tuple[Callable, Dict]:
        import paddle
        xa, wa = self.x, self.w
        if fmt == "NHWC":
            xa, wa = (np.ascontiguousarray(v.transpose(0, 2, 3, 1)) for v in (xa, wa))
        paddle.enable_static()
        try:
            main, start = paddle.static.Program(), paddle.static.Program()
            with paddle.static.program_guard(main, start), paddle.utils.unique_name.guard():
                x = paddle.static.data("x", list(xa.shape), "float32")
                w = paddle.static.data("w", list(wa.shape), "float32")
                m = micro_layers(fmt)
                loss = paddle.mean(m(x) * w)
                _, pg = paddle.optimizer.SGD(self.lr).minimize(loss)
            n_attr = set_onednn_attrs(main, ops) if ops else 0
            exe = paddle.static.Executor(paddle.CPUPlace())
            scope = paddle.static.Scope()
            exe.run(start, scope=scope)
            for p, v in zip(m.parameters(), self.init):
                if tuple(p.shape) != v.shape:   # NHWC convs keep the filter as O H W I
                    v = np.ascontiguousarray(v.transpose(0, 2, 3, 1))
                scope.find_var(p.name).get_tensor().set(v, paddle.CPUPlace())
            tr = trainable(m.parameters())
            index = {id(p): i for i, p in enumerate(tr)}
            names = {p.name: i for i, p in enumerate(tr)}
            order = [index.get(id(p), names.get(getattr(p, "name", None))) for p, _ in pg]
            gvars = [g for _, g in pg]
            shapes = [tuple(tr[i].shape) for i in order]
        finally:
            paddle.disable_static()
        feed = {"x": xa, "w": wa}

        def step(keep=False):
            with flags(f or {}), static_mode():
                out = exe.run(main, feed=feed, fetch_list=[loss] + (gvars if keep else []),
                              scope=scope)
            if keep:
                g = {}
                for i, sh, v in zip(order, shapes, out[1:]):
                    v = np.array(v)
                    if v.ndim == 4 and v.shape != self.init_shapes[i]:   # O H W I back to O I H W
                        v = v.transpose(0, 3, 1, 2)
                    g[f"{i}:{tuple(v.shape)}"] = v
                return g
        g = step(keep=True)
        step.onednn_attrs = n_attr
        return step, g


def to_static_wrap(ops, fix_layout=True):
    def wrap(m):
        import paddle
        patch_to_static()
        # the Layer itself (its forward is replaced in place); the bound method fails on
        # YOLOv5.forward in 2.6 ("co_varnames is too small")
        # full_graph: the AST translation (SOT, the default, fails on Detect's loop on 2.6)
        sm = paddle.jit.to_static(m, full_graph=True)
        first = [True]

        def fwd(x):
            if first[0]:
                _TO_STATIC_OPS[0], _FIX_GRAD_LAYOUT[0] = ops, fix_layout
                try:
                    return sm(x)
                finally:
                    _TO_STATIC_OPS[0], _FIX_GRAD_LAYOUT[0] = None, True
                    first[0] = False
            return sm(x)
        return fwd
    return wrap


def _has_flag(name: str) -> bool:
    import paddle
    try:
        paddle.get_flags([name])
        return True
    except Exception:
        return False


def micro_candidates(a) -> Dict[str, Callable[[], Tuple[Callable, Dict]]]:
    mb = Micro(a)
    c: Dict[str, Callable] = {"dygraph": lambda: mb.eager()}
    legacy = not use_pir()
    c["dygraph+FLAGS_use_mkldnn"] = lambda: mb.eager(f={"FLAGS_use_mkldnn": True})
    if _has_flag("FLAGS_use_onednn"):   # Paddle 3 renamed the flags; both names exist there
        c["dygraph+FLAGS_use_onednn"] = lambda: mb.eager(f={"FLAGS_use_onednn": True})
    tracer = "FLAGS_tracer_mkldnn_ops_on" if _has_flag("FLAGS_tracer_mkldnn_ops_on") else "FLAGS_tracer_onednn_ops_on"
    c[f"dygraph+FLAGS_use_mkldnn+{tracer[6:]}[conv]"] = lambda: mb.eager(
        f={"FLAGS_use_mkldnn": True, tracer: ",".join(CONV)})
    if legacy:
        c["static"] = lambda: mb.static()
        for k, ops in OPSETS.items():
            c[f"static+onednn[{k}]"] = (lambda ops=ops: mb.static(ops))
        c["static NHWC"] = lambda: mb.static(fmt="NHWC")
        c["static+onednn[conv] NHWC"] = lambda: mb.static(CONV, fmt="NHWC")
    if not legacy:
        c["static"] = lambda: mb.static()
        c["static+FLAGS_use_mkldnn"] = lambda: mb.static(f={"FLAGS_use_mkldnn": True})
    c["to_static"] = lambda: mb.eager(to_static_wrap(None))
    if legacy:
        c["to_static+onednn[conv]"] = lambda: mb.eager(to_static_wrap(CONV))
        if _has_flag("FLAGS_enable_pir_with_pt_in_dy2st"):   # dy2st runs a PIR translation
            nopir = {"FLAGS_enable_pir_with_pt_in_dy2st": False}
            c["to_static pir_with_pt_in_dy2st=0"] = lambda: mb.eager(to_static_wrap(None), f=nopir)
            c["to_static+onednn[conv] pir_with_pt_in_dy2st=0 (grads as oneDNN left them)"] = lambda: mb.eager(
                to_static_wrap(CONV, fix_layout=False), f=nopir)
            c["to_static+onednn[conv] pir_with_pt_in_dy2st=0"] = lambda: mb.eager(to_static_wrap(CONV), f=nopir)
            c["to_static+onednn[conv+bn] pir_with_pt_in_dy2st=0"] = lambda: mb.eager(
                to_static_wrap(CONV + BN), f=nopir)
    else:
        c["to_static+FLAGS_use_mkldnn"] = lambda: mb.eager(to_static_wrap(None), f={"FLAGS_use_mkldnn": True})
    c["dygraph+legacy op conv2d(use_mkldnn=True)"] = lambda: legacy_op_probe(mb)
    c["dygraph+custom oneDNN conv op"] = lambda: mb.eager(op_plain=0)
    c["dygraph+custom oneDNN conv op (NCHW activations)"] = lambda: mb.eager(op_plain=1)
    return c


def legacy_op_probe(mb):
    """Dygraph's legacy op entry (_legacy_C_ops, attributes as arguments) with use_mkldnn:
    reaches the oneDNN kernel selection, which then wants input names the eager path never
    gives its OneDNNContext."""
    import paddle
    from paddle import _legacy_C_ops
    x = paddle.to_tensor(mb.x)
    w = paddle.to_tensor(mb.init[0])
    _legacy_C_ops.conv2d(x, w, "strides", [1, 1], "paddings", [1, 1], "dilations", [1, 1], "groups", 1,
                         "use_cudnn", False, "use_mkldnn", True, "padding_algorithm", "EXPLICIT",
                         "data_format", "NCHW")
    raise RuntimeError("unexpected: _legacy_C_ops.conv2d with use_mkldnn ran")


# --------------------------------------------------------------------------- model
class Model:
    def __init__(self, a):
        import paddle
        from ppyolo_slim.config import load_config
        from ppyolo_slim.engine.loss import ComputeLoss
        from ppyolo_slim.model import build_model
        from ppyolo_slim.model.weights import ModelMeta
        self.meta = ModelMeta()
        paddle.seed(0)
        m = build_model(self.meta)
        m.train()
        self.init = {k: v.numpy() for k, v in m.state_dict().items()}
        det = m.detect
        self.loss = ComputeLoss(det.anchors.numpy(), det.stride, self.meta.nc,
                                dict(load_config(None)["loss"]), a.size)
        rs = np.random.RandomState(0)
        self.x = rs.rand(a.batch, 3, a.size, a.size).astype("float32")
        t = []
        for b in range(a.batch):   # 1..8 boxes an image
            for _ in range(rs.randint(1, 9)):
                w, h = rs.uniform(0.05, 0.5, 2)
                cx, cy = rs.uniform(w / 2, 1 - w / 2), rs.uniform(h / 2, 1 - h / 2)
                t.append([b, rs.randint(0, self.meta.nc), cx, cy, w, h])
        self.t = np.asarray(t, dtype="float32")
        self.include = a.onednn_include

    def eager(self, fwd_wrap=None, f=None, op_plain=None, op_min_kernel=1, silu=False):
        import paddle
        from ppyolo_slim.model import build_model
        m = build_model(self.meta)
        m.set_state_dict({k: paddle.to_tensor(v) for k, v in self.init.items()})
        m.train()
        n_op = use_onednn_op(m, self.include, op_plain, op_min_kernel) if op_plain is not None else None
        if silu:
            use_silu_op(m)
        opt = paddle.optimizer.Momentum(0.01, 0.9, parameters=m.parameters())
        return eager_step(m, opt, fwd_wrap, f, n_op, lambda out: self.loss(out, self.t)[0],
                          paddle.to_tensor(self.x))


def model_candidates(a):
    mb = Model(a)
    c = {"dygraph": lambda: mb.eager(), "to_static": lambda: mb.eager(to_static_wrap(None))}
    if not use_pir():
        nopir = {"FLAGS_enable_pir_with_pt_in_dy2st": False} if _has_flag("FLAGS_enable_pir_with_pt_in_dy2st") else {}
        sfx = " pir_with_pt_in_dy2st=0" if nopir else ""
        c["to_static+onednn[conv]"] = lambda: mb.eager(to_static_wrap(CONV))
        if nopir:
            c["to_static" + sfx] = lambda: mb.eager(to_static_wrap(None), f=nopir)
        for k in a.model_opsets:
            c[f"to_static+onednn[{k}]{sfx}"] = (lambda ops=OPSETS[k]: mb.eager(to_static_wrap(ops), f=nopir))
    else:
        c["to_static+FLAGS_use_mkldnn"] = lambda: mb.eager(to_static_wrap(None), f={"FLAGS_use_mkldnn": True})
    c["dygraph+custom oneDNN conv op"] = lambda: mb.eager(op_plain=0)
    c["dygraph+custom oneDNN conv op (kernel > 1 only)"] = lambda: mb.eager(op_plain=0, op_min_kernel=2)
    c["dygraph+custom SiLU op"] = lambda: mb.eager(silu=True)
    c["dygraph+custom oneDNN conv op+custom SiLU op"] = lambda: mb.eager(op_plain=0, silu=True)
    return c


# --------------------------------------------------------------------------- running
def setup_threads(n: int):
    import paddle
    paddle.base.core.set_num_threads(int(n))


def probe(a) -> None:
    """Child: build candidate a.probe, run its warm-up, then one marked step (stdout)."""
    import paddle  # noqa: F401
    setup_threads(a.threads)
    cands = (micro_candidates if a.part == "micro" else model_candidates)(a)
    step, _ = cands[a.probe]()
    step()
    libc = ctypes.CDLL(None)
    libc.fflush(None)
    sys.stdout.flush()
    os.write(1, (MARK + "\n").encode())
    step()
    libc.fflush(None)
    sys.stdout.flush()
    os.write(1, (MARK + "\n").encode())


def parse_verbose(text: str) -> Dict[str, Any]:
    """oneDNN primitives of the marked step: {kind/prop_kind: [count, summed exec ms]}."""
    parts = text.split(MARK)
    body = parts[1] if len(parts) >= 3 else ""
    prims: Dict[str, List[float]] = {}
    for line in body.splitlines():
        if not line.startswith(("onednn_verbose", "dnnl_verbose")):
            continue
        f = line.split(",")
        if "exec" not in f:
            continue
        i = f.index("exec")
        try:
            kind, prop = f[i + 2], f[i + 4]
            ms = float(f[-1])
        except (IndexError, ValueError):
            continue
        key = f"{kind}/{prop}"
        e = prims.setdefault(key, [0, 0.0])
        e[0] += 1
        e[1] += ms
    total = sum(v[0] for v in prims.values())
    return {"ran": total > 0, "primitives_in_one_step": total,
            "by_kind": {k: {"count": int(v[0]), "exec_ms": round(v[1], 2)} for k, v in sorted(prims.items())},
            "probe_ok": len(parts) >= 3}


def run_probe(a, name: str) -> Dict[str, Any]:
    env = dict(os.environ, ONEDNN_VERBOSE="1", DNNL_VERBOSE="1")
    cmd = [sys.executable, os.path.abspath(__file__), a.part, "--probe", name, "--threads", str(a.threads),
           "--batch", str(a.batch), "--size", str(a.size), "--onednn-include", a.onednn_include,
           *(["--keep-freed-memory"] if a.keep_freed_memory else [])]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=C.REPO)
    out = parse_verbose(r.stdout)
    if r.returncode != 0:
        out["error"] = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"rc {r.returncode}"
    return out


def print_tables(path: str) -> None:
    with open(path, encoding="utf-8") as fh:
        d = json.load(fh)
    for key, sec in d["sections"].items():
        st = sec["settings"]
        print(f"\n**{key}** ({sec['date']}; batch {st['batch']}, {st['size']} px, {st['threads']} thread, "
              f"{st['rounds']} rounds; load at start {sec['machine']['load_avg_at_start'][0]})\n")
        rows = []
        for name, e in sec["candidates"].items():
            o = e.get("onednn", {})
            g = e.get("grads_vs_dygraph")
            conv = sum(v["count"] for k, v in o.get("by_kind", {}).items() if k.startswith("convolution"))
            rows.append([f"`{name}`", e.get("median_ms", "failed"),
                         e["ratio_to_dygraph"]["median_of_pairs"] if "ratio_to_dygraph" in e else "",
                         "" if g is None else ("equal" if g["allclose"] else f"**differ** ({g.get('max_err_rel_to_max', 0):.2g})"),
                         f"{conv} conv / {o.get('primitives_in_one_step', 0)}" if o.get("ran") else ("no" if o else ""),
                         (e.get("error") or "")[:90]])
        print(C.fmt_table(["candidate", "median ms", "x dygraph", "grads vs dygraph", "oneDNN primitives a step",
                           "error"], rows))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=["micro", "model", "table"],
                    help="table: print the markdown tables of the results file")
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds (micro 9, model 7)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=None, help="image side (micro 64, model 256)")
    ap.add_argument("--only", nargs="*", default=None, help="candidate names to run (default all)")
    ap.add_argument("--model-opsets", nargs="*", default=["conv"], choices=list(OPSETS))
    ap.add_argument("--onednn-include", default=os.path.join(C.WORK, "onednn-include"),
                    help="oneDNN devel headers for the custom op (default benchmarks/work/onednn-include)")
    ap.add_argument("--no-probe", action="store_true", help="skip the ONEDNN_VERBOSE child runs")
    ap.add_argument("--keep-freed-memory", action="store_true",
                    help="glibc malloc keeps freed blocks (ppyolo_slim.utils.runtime.keep_freed_memory, what "
                         "the trainer does since 2026-12-01) for every candidate; its own results section")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--probe", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.part == "table":
        return print_tables(C.result_path("levers", a.quick))
    a.size = a.size or (64 if a.part == "micro" else 256)
    a.rounds = a.rounds or (2 if a.quick else (9 if a.part == "micro" else 7))
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    if a.keep_freed_memory:
        sys.path.insert(0, C.REPO)
        from ppyolo_slim.utils.runtime import keep_freed_memory
        if not keep_freed_memory():
            ap.error("--keep-freed-memory: glibc's mallopt is not available here")
    if a.probe:
        return probe(a)

    import paddle
    setup_threads(a.threads)
    cands = (micro_candidates if a.part == "micro" else model_candidates)(a)
    if a.only:
        cands = {k: v for k, v in cands.items() if k in a.only}
    steps, grads, notes = {}, {}, {}
    for name, build in cands.items():
        t = time.perf_counter()
        try:
            steps[name], grads[name] = build()
            notes[name] = {"build_and_first_step_s": round(time.perf_counter() - t, 2)}
            if hasattr(steps[name], "onednn_attrs"):
                notes[name]["ops_with_use_mkldnn"] = steps[name].onednn_attrs
            if hasattr(steps[name], "convs_on_custom_op"):
                notes[name]["convs_on_custom_op"] = steps[name].convs_on_custom_op
        except Exception as e:   # a candidate that fails is recorded, not fatal
            if os.environ.get("LEVERS_DEBUG"):
                raise
            lines = [l.strip() for l in str(e).strip().splitlines() if l.strip()] or [""]
            msg = lines[0][:300] + (f" ... {lines[-1][:200]}" if len(lines) > 1 else "")
            notes[name] = {"error": f"{type(e).__name__}: {msg}"}
        print(name, notes[name], flush=True)
    runnable = {k: steps[k] for k in steps}
    times = C.interleaved(runnable, rounds=a.rounds, warmup=a.warmup)
    ref = times.get("dygraph")
    res: Dict[str, Any] = {}
    for name in cands:
        e = dict(notes[name])
        if name in times:
            e.update(C.stats(times[name]))
            e["times_ms"] = [round(x, 1) for x in times[name]]
            if ref is not None:
                e["ratio_to_dygraph"] = C.ratio(times[name], ref)
            if "dygraph" in grads and name != "dygraph":
                e["grads_vs_dygraph"] = compare(grads["dygraph"], grads[name])
        if not a.no_probe:
            e["onednn"] = run_probe(a, name)
        res[name] = e
        print(f"{name:34s} {e.get('median_ms', float('nan')):8.1f} ms  "
              f"x{e.get('ratio_to_dygraph', {}).get('median_of_pairs', float('nan')):.3f}  "
              f"grads {e.get('grads_vs_dygraph', {}).get('allclose')}  "
              f"onednn {e.get('onednn', {}).get('primitives_in_one_step')}", flush=True)

    key = f"{a.part} paddle {paddle.__version__} {ir_name()}" + (" malloc-kept" if a.keep_freed_memory else "")
    section = {"settings": {"threads": a.threads, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                            "batch": a.batch, "size": a.size, "rounds": a.rounds, "warmup": a.warmup,
                            "what": ("conv3x3 32->64 + BN + SiLU, conv3x3 64->64 + BN + SiLU, loss mean(y*w), SGD"
                                     if a.part == "micro" else
                                     "YOLOv5n (nc 80) forward + ComputeLoss + backward + Momentum step")},
               "paddle": paddle.__version__, "ir": ir_name(), "date": C.header("levers", a.quick)["date"],
               "machine": C.machine(), "candidates": res}
    path = C.result_path("levers", a.quick)
    out: Dict[str, Any] = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as fh:
            out = json.load(fh)
    out.setdefault("benchmark", "levers")
    out["versions_" + paddle.__version__] = C.versions()
    out.setdefault("sections", {})[key] = section
    C.write_result("levers", a.quick, out)


if __name__ == "__main__":
    main()
