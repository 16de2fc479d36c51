"""ppyolo_slim against the reference implementation, ultralytics YOLOv5n (PyPI ``yolov5``,
PyTorch), on the same machine in the same run.

The peer runs in its own venv (benchmarks/setup_peer_venv.sh; never the project's python)
as a long-lived worker process (_peer_worker.py) so the two can take turns:

* training step: same batch, image size, random images and targets (the same arrays for
  both), each side's own loss, three-group SGD and EMA; measurement windows alternate
  (ours, peer, peer, ours, ...), each step split into forward / loss / backward / optimizer.
* inference: the peer's PyTorch model (fused, as its detect.py runs it) against our
  dygraph model, windows alternating; the peer's ONNX export against ours, both in this
  process's onnxruntime, calls alternating.
* model size: the peer builds yolov5n.yaml (nc=80) and reports parameters and GFLOPs
  (thop, as ultralytics' model_info; and torch's FLOP counter), beside ours.
* profile: Paddle's profiler on our step and torch's profiler on the peer's.

    bash benchmarks/setup_peer_venv.sh            # once: /work/bench-venv
    python benchmarks/peer.py                     # batch 16, 256 px, 320/640 px inference
    python benchmarks/peer.py --quick
    /work/venv-p3/bin/python benchmarks/peer.py --tag paddle3   # our side on another Paddle:
                                                  # results/peer_paddle3.json beside peer.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

import numpy as np  # noqa: E402

DEFAULT_VENV = os.environ.get("PPYOLO_BENCH_VENV", "/work/bench-venv")


class Peer:
    """The worker process; ``call`` sends one command and returns its answer."""

    def __init__(self, python: str, log_path: str, threads: int):
        worker = os.path.join(C.HERE, "_peer_worker.py")
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                   PYTHONPATH="")
        self.log = open(log_path, "w")
        self.p = subprocess.Popen([python, worker], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=self.log, text=True, env=env, cwd=C.WORK)

    def call(self, cmd: str, **kw):
        self.p.stdin.write(json.dumps({"cmd": cmd, **kw}) + "\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError(f"peer worker died during {cmd!r}; see {self.log.name}")
        res = json.loads(line)
        if not res.pop("ok"):
            raise RuntimeError(f"peer worker: {res['error']} (traceback in {self.log.name})")
        return res

    def close(self):
        try:
            self.p.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            self.p.stdin.flush()
            self.p.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.p.kill()
        self.log.close()


def random_batch(batch: int, img_size: int, nc: int, seed: int = 0):
    """Random images in [0,1] and 3-8 random boxes per image, in the collate layout
    (batch_idx, cls, cx, cy, w, h; normalised)."""
    rng = np.random.default_rng(seed)
    x = rng.random((batch, 3, img_size, img_size), dtype=np.float32)
    rows = []
    for b in range(batch):
        for _ in range(int(rng.integers(3, 9))):
            w, h = rng.uniform(0.05, 0.4, 2)
            cx, cy = rng.uniform(w / 2, 1 - w / 2), rng.uniform(h / 2, 1 - h / 2)
            rows.append([b, int(rng.integers(0, nc)), cx, cy, w, h])
    return x, np.asarray(rows, dtype=np.float32)


def pause():
    """Let the other process's OpenMP threads stop spinning before the next window."""
    time.sleep(0.3)


def alternate_windows(ours, peer, rounds: int, window: int):
    """ours(n)/peer(n) each run n timed calls and return {phase: [ms...]}; rounds alternate
    the order (ours first, then peer first, ...)."""
    out = {"ours": {}, "peer": {}}
    for r in range(rounds):
        order = (("ours", ours), ("peer", peer)) if r % 2 == 0 else (("peer", peer), ("ours", ours))
        for name, fn in order:
            for k, v in fn(window).items():
                out[name].setdefault(k, []).extend(v)
            pause()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--venv", default=DEFAULT_VENV, help="the peer's venv (has torch and yolov5)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--img-size", type=int, default=256, help="training step image size")
    ap.add_argument("--nc", type=int, default=5, help="classes (5: the shapes set)")
    ap.add_argument("--rounds", type=int, default=4, help="alternating windows per side")
    ap.add_argument("--window", type=int, default=3, help="training steps per window")
    ap.add_argument("--infer-sizes", default="320,640")
    ap.add_argument("--infer-batch", type=int, default=1)
    ap.add_argument("--infer-window", type=int, default=5)
    ap.add_argument("--profile-steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1,
                    help="CPU threads for both sides (1: on a shared machine more threads than free "
                         "cores make both stall unevenly; use the core count on a quiet one)")
    ap.add_argument("--tag", help="write results/peer_TAG.json (a variant beside the main table, e.g. our "
                                  "side run by another interpreter with another Paddle)")
    ap.add_argument("--cpu-ops", choices=["auto", "none"], default="auto",
                    help="our model's SiLUs and convs on the trainer's custom CPU ops (its cpu_ops key, "
                         "engine/cpu_ops; auto: what builds here) or on Paddle's kernels (none)")
    ap.add_argument("--quick", action="store_true", help="smoke run: batch 2, 64 px, 1 window each")
    a = ap.parse_args(argv)
    if a.quick:
        a.batch, a.img_size, a.rounds, a.window = 2, 64, 2, 1
        a.infer_sizes, a.infer_window, a.profile_steps = "64", 2, 1
    name = f"peer_{a.tag}" if a.tag else "peer"
    work = os.path.join(C.WORK, "quick" if a.quick else "", name)
    os.makedirs(work, exist_ok=True)
    python = os.path.join(a.venv, "bin", "python")
    result = C.header(name, a.quick)
    result["settings"] = {k: v for k, v in vars(a).items() if k != "quick"}
    result["ours_python"] = sys.executable   # our side's interpreter (and so its Paddle)
    t_start = time.time()
    if not os.path.isfile(python):
        result["error"] = (f"no peer venv at {a.venv} (no {python}); create it with "
                           f"bash benchmarks/setup_peer_venv.sh")
        C.write_result(name, a.quick, result)
        print(result["error"], file=sys.stderr)
        return 2

    from ppyolo_slim.utils.runtime import set_cpu_threads
    set_cpu_threads(a.threads)        # dygraph math threads, as the trainer sets them
    peer = Peer(python, os.path.join(work, "peer_worker.log"), a.threads)
    try:
        # ---- model size: theirs (nc=80, as published) and ours built the same way
        info = peer.call("info", nc=80)
        from ppyolo_slim.model import ModelMeta, build_model
        from ppyolo_slim.model.flops import gflops
        from ppyolo_slim.model.yolo import count_parameters
        m80 = build_model(ModelMeta(nc=80))
        result["model_size"] = {
            "peer": {"params": info["params"], "gflops_640": info["gflops"]},
            "ours": {"params": count_parameters(m80), "params_incl_bn_stats": count_parameters(m80, False),
                     "gflops_640": gflops(m80, 640)},
            "params_equal": info["params"] == count_parameters(m80)}
        result["peer_versions"] = info["versions"]
        del m80
        print(f"yolov5n nc=80: peer {info['params']:,} params {info['gflops']}, ours "
              f"{result['model_size']['ours']['params']:,} params "
              f"{result['model_size']['ours']['gflops_640']:.2f} GFLOPs", flush=True)

        # ---- training step
        from _ours import OursTrainStep, paddle_profile
        x, t = random_batch(a.batch, a.img_size, a.nc)
        xp, tp = os.path.join(work, "train_x.npy"), os.path.join(work, "train_t.npy")
        np.save(xp, x), np.save(tp, t)
        peer.call("setup_train", nc=a.nc, img_size=a.img_size, batch=a.batch, threads=a.threads,
                  images=xp, targets=tp)
        ours = OursTrainStep(a.nc, a.img_size, x, t, cpu_ops=a.cpu_ops)
        result["ours_cpu_ops"] = ours.cpu_ops
        print(f"our side: cpu_ops {a.cpu_ops} -> {ours.cpu_ops}", flush=True)
        ours.steps(2)                       # warm-up
        peer.call("train", steps=2)
        pause()
        tr = alternate_windows(ours.steps, lambda n: peer.call("train", steps=n)["times_ms"],
                               a.rounds, a.window)
        phases = {}
        for k in ("forward", "loss", "backward", "optimizer_ema", "step"):
            phases[k] = {"ours": C.stats(tr["ours"][k]), "peer": C.stats(tr["peer"][k]),
                         "ours_over_peer": C.ratio(tr["ours"][k], tr["peer"][k])}
        result["train_step"] = {
            "batch": a.batch, "img_size": a.img_size, "nc": a.nc, "phases": phases,
            "img_per_s": {"ours": a.batch / (phases["step"]["ours"]["median_ms"] / 1000),
                          "peer": a.batch / (phases["step"]["peer"]["median_ms"] / 1000)},
            "method": f"{a.rounds} rounds of {a.window}-step windows per side, order alternating; "
                      f"same random images/targets; forward, loss, backward, optimizer step + EMA"}
        s = phases["step"]
        print(f"train step b{a.batch} {a.img_size}px: ours {s['ours']['median_ms']:.0f} ms, peer "
              f"{s['peer']['median_ms']:.0f} ms -> ours/peer {s['ours_over_peer']['of_medians']:.2f}x", flush=True)

        # ---- profile (after the timing, so it cannot disturb it)
        prof_ours = paddle_profile(ours.step, a.profile_steps)
        pause()
        prof_peer = peer.call("profile_train", steps=a.profile_steps)
        result["profile"] = {"ours_paddle_profiler": prof_ours, "peer_torch_profiler": prof_peer}
        del ours

        # ---- inference: PyTorch vs dygraph (windows), ONNX vs ONNX (calls), same process ORT
        import paddle
        from ppyolo_slim.data.shapes import NAMES
        from ppyolo_slim.export.exporter import export_layer
        from ppyolo_slim.export.runtime import OnnxPredictor
        rows = []
        for s in [int(v) for v in a.infer_sizes.split(",")]:
            b = a.infer_batch
            xi = np.random.default_rng(1).random((b, 3, s, s), dtype=np.float32)
            xip = os.path.join(work, f"infer_x_{s}_{b}.npy")
            np.save(xip, xi)
            peer_onnx = os.path.join(work, f"peer_yolov5n_{s}_b{b}.onnx")
            peer.call("setup_infer", nc=a.nc, img_size=s, batch=b, threads=a.threads, onnx=peer_onnx)
            paddle.seed(0)
            meta = ModelMeta(nc=a.nc, names=list(NAMES)[:a.nc] if a.nc <= len(NAMES) else [], img_size=s)
            model = build_model(meta)
            model.eval()
            ours_dir = os.path.join(work, f"ours_yolov5n_{s}_b{b}")
            export_layer(model, meta, ours_dir, img_size=s, batch=b, check=False, log=lambda m: None)
            xt = paddle.to_tensor(xi)

            def ours_dy(n):
                ts = []
                with paddle.no_grad():
                    for _ in range(n):
                        t0 = time.perf_counter()
                        model(xt).numpy()
                        ts.append(1000 * (time.perf_counter() - t0))
                return {"ms": ts}

            ours_dy(2)
            peer.call("infer", n=2, images=xip)
            pause()
            dy = alternate_windows(ours_dy, lambda n: {"ms": peer.call("infer", n=n, images=xip)["times_ms"]},
                                   a.rounds, a.infer_window)
            po, pp = OnnxPredictor(ours_dir, device="cpu", threads=a.threads), \
                OnnxPredictor(peer_onnx, device="cpu", threads=a.threads)
            ox = C.interleaved({"ours": lambda: po(xi), "peer": lambda: pp(xi)},
                               rounds=a.rounds * a.infer_window, warmup=3)
            for rt, tt in (("dygraph vs PyTorch (eager)", dy), ("onnxruntime", {"ours": {"ms": ox["ours"]},
                                                                                "peer": {"ms": ox["peer"]}})):
                row = {"runtime": rt, "img_size": s, "batch": b, "ours": C.stats(tt["ours"]["ms"]),
                       "peer": C.stats(tt["peer"]["ms"]),
                       "ours_over_peer": C.ratio(tt["ours"]["ms"], tt["peer"]["ms"])}
                rows.append(row)
                print(f"{rt:28s} {s}px b{b}: ours {row['ours']['median_ms']:.1f} ms, peer "
                      f"{row['peer']['median_ms']:.1f} ms -> ours/peer {row['ours_over_peer']['of_medians']:.2f}x",
                      flush=True)
        result["inference"] = {"rows": rows, "weights": "random init on both sides (latency does not "
                                                        "depend on values)",
                               "peer_model": "fused Conv+BN (model.fuse()), eval, torch.no_grad",
                               "peer_onnx": "torch.onnx.export with yolov5 export.py settings (opset 12, "
                                            "Detect export mode, constant folding), dynamo=False",
                               "ours_dygraph": "eval, paddle.no_grad, output copied to numpy",
                               "ours_onnx": "ppyolo_slim.export.exporter.export_layer (paddle2onnx, opset 13)"}
    finally:
        peer.close()
    result["seconds"] = round(time.time() - t_start, 1)
    C.write_result(name, a.quick, result)
    print(tables(result))
    return 0


def tables(r) -> str:
    ts = r["train_step"]
    ph = ts["phases"]
    t1 = C.fmt_table(["phase (b%d, %d px)" % (ts["batch"], ts["img_size"]), "ours ms", "peer ms", "ours / peer"],
                     [[k, ph[k]["ours"]["median_ms"], ph[k]["peer"]["median_ms"],
                       f"{ph[k]['ours_over_peer']['of_medians']:.2f}x"] for k in ph])
    t2 = C.fmt_table(["runtime", "px", "batch", "ours ms (median / p90)", "peer ms (median / p90)", "ours / peer"],
                     [[x["runtime"], x["img_size"], x["batch"],
                       f"{x['ours']['median_ms']:.1f} / {x['ours']['p90_ms']:.1f}",
                       f"{x['peer']['median_ms']:.1f} / {x['peer']['p90_ms']:.1f}",
                       f"{x['ours_over_peer']['of_medians']:.2f}x"] for x in r["inference"]["rows"]])
    return t1 + "\n\n" + t2 + "\n\n" + profile_table(r)


# op families: Paddle profiler names (ours, inclusive CPU time; Paddle 3 prefixes grad nodes
# with "Global_") / torch profiler names (peer, self CPU time)
FAMILIES = {
    "conv forward": (["conv2d dygraph"], ["aten::mkldnn_convolution", "aten::_slow_conv2d_forward"]),
    "conv backward": (["Conv2dGradNodeFinal", "Global_Conv2dGradNodeFinal"],
                      ["aten::convolution_backward", "aten::_slow_conv2d_backward",
                       "aten::mkldnn_convolution_backward"]),
    "SiLU forward": (["silu dygraph"], ["aten::silu_", "aten::silu"]),
    "SiLU backward": (["SiluGradNode", "Global_SiluGradNode"], ["aten::silu_backward"]),
    "BatchNorm forward": (["batch_norm dygraph"], ["aten::native_batch_norm"]),
    "BatchNorm backward": (["BatchNormGradNode", "Global_BatchNormGradNode"], ["aten::native_batch_norm_backward"]),
}


def profile_table(r) -> str:
    p = r.get("profile")
    if not p:
        return ""
    ours = {o["op"]: o["ms_per_step"] for o in p["ours_paddle_profiler"]["top_ops"]}
    peer = {o["op"]: o["self_ms_per_step"] for o in p["peer_torch_profiler"]["top_self_cpu"]}
    rows = []
    for fam, (a, b) in FAMILIES.items():
        x, y = sum(ours.get(k, 0.0) for k in a), sum(peer.get(k, 0.0) for k in b)
        rows.append([fam, x, y, f"{x / y:.2f}x" if y else "-", x - y])
    po = p["ours_paddle_profiler"]["phases"].get("profilestep_ms_per_step", float("nan"))
    pp = p["peer_torch_profiler"]["total_self_ms_per_step"]
    rows.append(["whole step (profiled)", po, pp, f"{po / pp:.2f}x", po - pp])
    return C.fmt_table(["op family (profiled training step)", "ours ms/step", "peer ms/step", "ours / peer",
                        "gap ms"], rows)


if __name__ == "__main__":
    sys.exit(main())
