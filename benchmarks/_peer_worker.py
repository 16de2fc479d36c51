"""The peer's side of benchmarks/peer.py: ultralytics YOLOv5 (PyPI ``yolov5``, PyTorch).

Runs in the benchmark venv (see benchmarks/setup_peer_venv.sh), never in the project's
python. It speaks JSON lines: one command per line on stdin, one answer per line on
stdout; logs go to stderr. It stays alive between commands, so peer.py can interleave
its measurement windows with ours.

Commands ({"cmd": ..., ...}):
  info      {nc}: parameters and GFLOPs (thop, as ultralytics' model_info) of yolov5n.yaml
  setup_train {nc, img_size, batch, threads, images, targets}: model, loss, optimizer, EMA
  train     {steps}: per-step phase times (forward, loss, backward, optimizer+EMA) in ms
  profile_train {steps}: torch.profiler op table of training steps
  setup_infer {nc, img_size, batch, threads, onnx}: fused eval model; its ONNX export
  infer     {n, images}: per-call times of the PyTorch model, in ms
  quit
"""
from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
import torch

S = {}


def _yolov5():
    import yolov5
    from yolov5.models.yolo import Model
    return os.path.dirname(yolov5.__file__), Model, yolov5.__version__


def build(nc: int):
    root, Model, _ = _yolov5()
    torch.manual_seed(0)
    return Model(os.path.join(root, "models", "yolov5n.yaml"), ch=3, nc=nc)


def cmd_info(nc: int = 80):
    from importlib import metadata
    root, _, ver = _yolov5()
    m = build(nc)
    params = sum(p.numel() for p in m.parameters())
    grads = sum(p.numel() for p in m.parameters() if p.requires_grad)
    gflops = {}
    try:   # as ultralytics' model_info: thop MACs at a stride-sized input, x2, scaled to 640
        import thop
        import copy
        stride = int(max(m.stride.max(), 32))
        im = torch.zeros((1, 3, stride, stride))
        macs = thop.profile(copy.deepcopy(m), inputs=(im,), verbose=False)[0]
        gflops["thop_640"] = macs / 1e9 * 2 * (640 / stride) ** 2
        gflops["method"] = "thop"
    except Exception as e:   # noqa: BLE001 (report why, fall back)
        gflops["thop_error"] = f"{type(e).__name__}: {e}"
    try:   # an independent count: torch's FLOP counter at 640 (2 FLOPs per MAC)
        from torch.utils.flop_counter import FlopCounterMode
        m.eval()
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            m(torch.zeros(1, 3, 640, 640))
        gflops["torch_flop_counter_640"] = fc.get_total_flops() / 1e9
    except Exception as e:   # noqa: BLE001
        gflops["torch_flop_counter_error"] = f"{type(e).__name__}: {e}"
    vers = {}
    for n in ("torch", "torchvision", "yolov5", "ultralytics", "thop", "onnx", "onnxruntime", "numpy"):
        try:
            vers[n] = metadata.version(n if n != "thop" else "thop")
        except metadata.PackageNotFoundError:
            vers[n] = None
    return {"nc": nc, "params": params, "trainable": grads, "gflops": gflops, "versions": vers,
            "torch_threads": torch.get_num_threads()}


def cmd_setup_train(nc, img_size, batch, threads, images, targets):
    import yaml
    from yolov5.utils.loss import ComputeLoss
    from yolov5.utils.torch_utils import ModelEMA, smart_optimizer
    torch.set_num_threads(int(threads))
    root, _, _ = _yolov5()
    model = build(nc)
    with open(os.path.join(root, "data", "hyps", "hyp.scratch-low.yaml")) as f:
        hyp = yaml.safe_load(f)
    nl = model.model[-1].nl
    hyp["box"] *= 3 / nl   # as yolov5 train.py
    hyp["cls"] *= nc / 80 * 3 / nl
    hyp["obj"] *= (img_size / 640) ** 2 * 3 / nl
    model.nc, model.hyp = nc, hyp
    model.train()
    S["model"] = model
    S["loss"] = ComputeLoss(model)
    S["opt"] = smart_optimizer(model, "SGD", hyp["lr0"], hyp["momentum"], hyp["weight_decay"])
    S["ema"] = ModelEMA(model)
    S["x"] = torch.from_numpy(np.load(images))
    S["t"] = torch.from_numpy(np.load(targets))
    return {"threads": torch.get_num_threads(), "x": list(S["x"].shape), "targets": list(S["t"].shape)}


def _train_step(times=None):
    model, x, t = S["model"], S["x"], S["t"]
    t0 = time.perf_counter()
    pred = model(x)
    t1 = time.perf_counter()
    loss, _ = S["loss"](pred, t)
    t2 = time.perf_counter()
    loss.backward()
    t3 = time.perf_counter()
    S["opt"].step()
    S["opt"].zero_grad()
    S["ema"].update(model)
    t4 = time.perf_counter()
    if times is not None:
        for k, a, b in (("forward", t0, t1), ("loss", t1, t2), ("backward", t2, t3), ("optimizer_ema", t3, t4),
                        ("step", t0, t4)):
            times.setdefault(k, []).append(1000 * (b - a))


def cmd_train(steps):
    times = {}
    for _ in range(int(steps)):
        _train_step(times)
    return {"times_ms": times}


def cmd_profile_train(steps, top=25):
    from torch.profiler import ProfilerActivity, profile
    _train_step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(int(steps)):
            _train_step()
    rows = []
    for e in sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:top]:
        rows.append({"op": e.key, "calls_per_step": e.count / steps, "self_ms_per_step": e.self_cpu_time_total / 1000 / steps})
    total = sum(e.self_cpu_time_total for e in prof.key_averages()) / 1000 / steps
    return {"top_self_cpu": rows, "total_self_ms_per_step": total}


def cmd_setup_infer(nc, img_size, batch, threads, onnx=None):
    torch.set_num_threads(int(threads))
    model = build(nc)
    model.eval()
    model = model.fuse()   # as ultralytics' detect.py / DetectMultiBackend does
    S["imodel"] = model
    out = {"threads": torch.get_num_threads()}
    if onnx:
        # the settings of yolov5 export.py (export_onnx): Detect in export mode, opset 12,
        # constant folding, fixed shape; dynamo=False (torch >= 2.9 defaults to the dynamo
        # exporter, which needs onnxscript; export.py predates it)
        from yolov5.models.yolo import Detect
        import copy
        em = copy.deepcopy(model)
        for m in em.modules():
            if isinstance(m, Detect):
                m.inplace, m.dynamic, m.export = False, False, True
        im = torch.zeros(batch, 3, img_size, img_size)
        for _ in range(2):
            em(im)   # dry runs (export.py does them too: builds the grids)
        tmp = onnx + ".tmp"
        torch.onnx.export(em, im, tmp, verbose=False, opset_version=12, do_constant_folding=True,
                          input_names=["images"], output_names=["output0"], dynamo=False)
        import onnx as onnx_mod
        m_onnx = onnx_mod.load(tmp)
        onnx_mod.checker.check_model(m_onnx)
        d = {"stride": str(int(max(model.stride))), "names": str({i: f"class{i}" for i in range(nc)})}
        for k, v in d.items():
            meta = m_onnx.metadata_props.add()
            meta.key, meta.value = k, v
        onnx_mod.save(m_onnx, tmp)
        os.replace(tmp, onnx)
        out["onnx"] = onnx
    return out


def cmd_infer(n, images):
    x = torch.from_numpy(np.load(images))
    times = []
    with torch.no_grad():
        for _ in range(int(n)):
            t = time.perf_counter()
            S["imodel"](x)
            times.append(1000 * (time.perf_counter() - t))
    return {"times_ms": times}


CMDS = {"info": cmd_info, "setup_train": cmd_setup_train, "train": cmd_train,
        "profile_train": cmd_profile_train, "setup_infer": cmd_setup_infer, "infer": cmd_infer}


def main() -> int:
    out = sys.stdout
    sys.stdout = sys.stderr   # yolov5 prints model summaries: keep the protocol channel clean
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        cmd = req.pop("cmd")
        if cmd == "quit":
            break
        try:
            res = {"ok": True, **CMDS[cmd](**req)}
        except Exception as e:   # noqa: BLE001 (the caller reports it)
            import traceback
            traceback.print_exc(file=sys.stderr)
            res = {"ok": False, "error": f"{cmd}: {type(e).__name__}: {e}"}
        out.write(json.dumps(res) + "\n")
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
