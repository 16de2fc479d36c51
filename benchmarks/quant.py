"""INT8 against FP32: PaddleSlim PTQ and QAT, for the original and the 8x-pruned model.

Accuracy: val mAP@0.5:0.95 and mAP@0.5 (pycocotools) of the FP32 model (ONNX Runtime), the
PTQ and the QAT models (``model_int8.onnx`` in ONNX Runtime; the Paddle INT8 program's mAP
is in the JSON too), at the training size. Latency: ONNX Runtime CPU (FP32 ``model.onnx``
against ``model_int8.onnx``) and Paddle Inference (oneDNN FP32 against oneDNN INT8) at
320 and 640 px, batch 1 and 8, one thread, all candidates of a size and batch timed
alternately in one loop (benchmarks/_common.py).

    python benchmarks/quant.py --original orig.pdparams --pruned pruned.pdparams --qat-epochs 5
    python benchmarks/quant.py --quick       # tiny random models, 64 px: checks the script runs

The latency models at 320 / 640 are the same quantizations exported at that size (PTQ
re-calibrated there on ``--latency-calib`` images; QAT exported from its checkpoint).
QAT fine-tunes, so its accuracy is also given against an FP32 control: the same run
(epochs, LR, data) without fake quantization.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402  (puts the repo on sys.path)

import ppyolo_slim  # noqa: E402,F401  (import order: before paddle)
import numpy as np  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--original", help="FP32 .pdparams of the original model")
    p.add_argument("--pruned", help="FP32 .pdparams of the 8x-pruned (fine-tuned) model")
    p.add_argument("-c", "--config", default="configs/quant.yml")
    p.add_argument("--data", default=None, help="default: the config's data")
    p.add_argument("--qat-epochs", type=int, default=5)
    p.add_argument("--sizes", type=int, nargs="+", default=[320, 640])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--latency-calib", type=int, default=16, help="calibration images of the latency models")
    p.add_argument("--work", default=os.path.join(C.WORK, "quant"))
    p.add_argument("--quick", action="store_true")
    p.add_argument("-o", "--opt", action="extend", nargs="+", default=[], metavar="KEY=VALUE")
    return p.parse_args(argv)


def _log(msg):
    print(msg, flush=True)


def _ort(path, threads=1):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    return lambda x: s.run(None, {name: x})[0]


def _paddle(folder, int8, threads=1):
    import paddle.inference as pi
    from ppyolo_slim.compat import program_file   # model.pdmodel (Paddle 2.6) or model.json (Paddle 3)
    cfg = pi.Config(program_file(folder), os.path.join(folder, "model.pdiparams"))
    cfg.disable_gpu()
    cfg.disable_glog_info()
    cfg.set_cpu_math_library_num_threads(threads)
    cfg.enable_mkldnn()
    if int8:
        cfg.enable_mkldnn_int8()
    pred = pi.create_predictor(cfg)
    name = pred.get_input_names()[0]

    def run(x):
        h = pred.get_input_handle(name)
        h.reshape(list(x.shape))
        h.copy_from_cpu(x)
        pred.run()
        return pred.get_output_handle(pred.get_output_names()[0]).copy_to_cpu()
    return run


def _map(predict, data, img_size):
    from ppyolo_slim.data import load_data
    from ppyolo_slim.engine.evaluate import evaluate_model
    spec = load_data(data, verbose=False)
    m, _ = evaluate_model(predict, spec.val, spec.names, img_size, 16)
    return {"map50_95": float(m["map50_95"]), "map50": float(m["map50"])}


def make_models(args, cfg_path, overrides, work, size, calib, qat_ckpts, log=_log):
    """FP32 export, PTQ and QAT INT8 folders of both models at ``size``. Training QAT only
    once (at the training size): ``qat_ckpts`` maps model -> its QAT checkpoint."""
    from ppyolo_slim.config import load_config
    from ppyolo_slim.export.exporter import export_model
    from ppyolo_slim.slim import quant
    out = {}
    for name, w in (("original", args.original), ("pruned", args.pruned)):
        d = os.path.join(work, f"{name}_{size}")
        fp32 = os.path.join(d, "fp32")
        if not os.path.isfile(os.path.join(fp32, "model.onnx")):
            export_model(w, fp32, img_size=size, batch=None, check=False, log=lambda m: None)
        cfg = load_config(cfg_path, overrides + [f"img_size={size}", f"quant.calib_images={calib}"])
        ptq = os.path.join(d, "ptq")
        if not os.path.isfile(os.path.join(ptq, quant.REPORT)):
            quant.ptq(w, ptq, cfg, log=log)
        qat = os.path.join(d, "qat")
        if name in qat_ckpts and not os.path.isfile(os.path.join(qat, quant.REPORT)):
            qcfg = load_config(cfg_path, overrides + [f"img_size={size}", "quant.qat=true"])
            quant.qat_export(qat_ckpts[name], qat, qcfg, log=log)
        out[name] = {"fp32": fp32, "ptq": ptq, "qat": qat if name in qat_ckpts else None}
    return out


def train_qat(args, cfg_path, overrides, work, qat: bool = True, log=_log):
    """QAT fine-tuning of both models with the project's trainer; returns model -> best
    checkpoint. ``qat=False``: the FP32 control, the same run without fake quantization (QAT
    trains; without it a QAT gain and a training gain look alike)."""
    from ppyolo_slim.config import load_config
    from ppyolo_slim.engine.trainer import train
    ckpts = {}
    what = "QAT" if qat else "FP32 control"
    for name, w in (("original", args.original), ("pruned", args.pruned)):
        out = os.path.join(work, f"qat_train_{name}" if qat else f"fp32_control_{name}")
        best = os.path.join(out, "best.pdparams")
        if not os.path.isfile(os.path.join(out, "results.json")):
            cfg = load_config(cfg_path, overrides + [f"quant.qat={str(qat).lower()}", f"output_dir={out}",
                                                     f"weights={w}", f"epochs={args.qat_epochs}", "log.images=0"])
            resume = os.path.join(out, "last.pdparams") if os.path.isfile(os.path.join(out, "last.state")) else None
            t = time.time()
            train(cfg, resume=resume, progress=False)
            log(f"{what} {name}: {args.qat_epochs} epochs in {time.time() - t:.0f} s")
        ckpts[name] = best if os.path.isfile(best) else os.path.join(out, "last.pdparams")
    return ckpts


def control_map(ckpt, work, name, size, data):
    """mAP of the FP32 control checkpoint, exported and run in onnxruntime as the FP32 row is."""
    from ppyolo_slim.export.exporter import export_model
    from ppyolo_slim.export.runtime import OnnxPredictor
    d = os.path.join(work, f"fp32_control_{name}_{size}")
    if not os.path.isfile(os.path.join(d, "model.onnx")):
        export_model(ckpt, d, img_size=size, batch=None, check=False, log=lambda m: None)
    return _map(OnnxPredictor(os.path.join(d, "model.onnx"), device="cpu"), data, size)


def quick_models(work):
    from ppyolo_slim.data import load_data
    from ppyolo_slim.data.shapes import generate_shapes
    from ppyolo_slim.model import ModelMeta, build_model, save_weights
    sys.path.insert(0, os.path.join(C.REPO, "tests"))
    from conftest import uneven_model
    data = generate_shapes(os.path.join(work, "shapes"), n_train=16, n_val=8, img_size=96, seed=1, verbose=False)
    names = list(load_data(data, verbose=False).names)
    meta = ModelMeta(nc=len(names), names=names, img_size=64)
    import paddle
    paddle.seed(5)   # the same random models every run: the INT8 check on random weights is then reproducible
    paths = []
    for i, model in enumerate((build_model(meta), uneven_model(nc=len(names)))):
        p = os.path.join(work, f"quick{i}.pdparams")
        save_weights(p, model.state_dict(), meta)
        paths.append(p)
    return data, paths


def main(argv=None) -> int:
    args = parse_args(argv)
    from ppyolo_slim.config import load_config
    from ppyolo_slim.utils.runtime import set_cpu_threads
    from ppyolo_slim.export.runtime import OnnxPredictor
    from ppyolo_slim.slim import quant
    os.makedirs(args.work, exist_ok=True)
    overrides = list(args.opt) + ["threads=1", "workers=0"]
    if args.quick:
        data, (args.original, args.pruned) = quick_models(args.work)
        overrides += [f"data={data}", "img_size=64", "quant.calib_images=8", "quant.check_images=4",
                      "batch_size=8", "eval.batch_size=8"]
        args.sizes, args.batches, args.rounds, args.qat_epochs, args.latency_calib = [64], [1, 2], 3, 1, 8
    elif not (args.original and args.pruned):
        print("error: give --original and --pruned (or --quick)", file=sys.stderr)
        return 2
    set_cpu_threads(1)
    cfg = load_config(args.config, overrides)
    data = args.data or cfg["data"]
    overrides.append(f"data={data}")
    train_size = int(cfg["img_size"])
    result = C.header("quant", args.quick)
    result.update({"models": {"original": os.path.abspath(args.original), "pruned": os.path.abspath(args.pruned)},
                   "data": data, "train_img_size": train_size, "qat_epochs": args.qat_epochs,
                   "quant_config": {k: v for k, v in cfg["quant"].items() if k != "qat"}, "threads": 1})
    t0 = time.time()
    qat = train_qat(args, args.config, overrides, args.work)
    control = train_qat(args, args.config, overrides, args.work, qat=False)
    acc_models = make_models(args, args.config, overrides, args.work, train_size, int(cfg["quant"]["calib_images"]),
                             qat)
    acc = {}
    for name, d in acc_models.items():
        row = {"fp32": _map(OnnxPredictor(os.path.join(d["fp32"], "model.onnx"), device="cpu"), data, train_size)}
        for method in ("ptq", "qat"):
            if d[method]:
                row[method] = _map(OnnxPredictor(os.path.join(d[method], quant.ONNX_INT8), device="cpu"), data,
                                   train_size)
                row[method + "_paddle_int8"] = _map(_paddle(d[method], int8=False), data, train_size)
                row[method]["share_of_fp32"] = row[method]["map50_95"] / max(row["fp32"]["map50_95"], 1e-9)
        row["fp32_control"] = control_map(control[name], args.work, name, train_size, data)
        row["qat"]["share_of_fp32_control"] = row["qat"]["map50_95"] / max(row["fp32_control"]["map50_95"], 1e-9)
        acc[name] = row
        _log(f"{name}: mAP@0.5:0.95 FP32 {row['fp32']['map50_95']:.4f}, PTQ {row['ptq']['map50_95']:.4f}, "
             f"QAT {row['qat']['map50_95']:.4f}, FP32 trained as long as QAT {row['fp32_control']['map50_95']:.4f}")
    result["accuracy"] = acc
    lat = {}
    for size in args.sizes:
        models = acc_models if size == train_size else make_models(
            args, args.config, overrides, args.work, size, args.latency_calib, qat)
        for b in args.batches:
            x = np.random.default_rng(0).random((b, 3, size, size), dtype=np.float32)
            cands = {}
            for name, d in models.items():
                cands[f"{name}/ort/fp32"] = _ort(os.path.join(d["fp32"], "model.onnx"))
                cands[f"{name}/paddle/fp32"] = _paddle(d["fp32"], int8=False)
                for method in ("ptq", "qat"):
                    cands[f"{name}/ort/{method}"] = _ort(os.path.join(d[method], quant.ONNX_INT8))
                    cands[f"{name}/paddle/{method}"] = _paddle(d[method], int8=True)
            times = C.interleaved({k: (lambda f=f: f(x)) for k, f in cands.items()}, rounds=args.rounds)
            st = {k: C.stats(v) for k, v in times.items()}
            base = st["original/ort/fp32"]["median_ms"]
            for k in st:
                eng = k.split("/")[1]
                st[k]["speedup_vs_original_fp32_same_runtime"] = st[f"original/{eng}/fp32"]["median_ms"] / st[k]["median_ms"]
                st[k]["speedup_vs_original_ort_fp32"] = base / st[k]["median_ms"]
            lat[f"{size}px_b{b}"] = st
            _log(f"{size} px, batch {b}: " + ", ".join(f"{k} {v['median_ms']:.1f} ms" for k, v in st.items()))
    result["latency"] = lat
    result["seconds"] = round(time.time() - t0, 1)
    C.write_result("quant", args.quick, result)
    print(table(result))
    return 0


def table(res) -> str:
    acc, lat = res["accuracy"], res["latency"]
    rows = []
    for name in ("original", "pruned"):
        for method in ("fp32", "ptq", "qat"):
            a = acc[name][method]
            share = "" if method == "fp32" else f"{100 * a['share_of_fp32']:.1f} %"
            if method == "qat" and "share_of_fp32_control" in a:
                share += f" ({100 * a['share_of_fp32_control']:.1f} % of FP32 +{res['qat_epochs']} ep)"
            cells = [name, method.upper(), f"{a['map50_95']:.4f}", f"{a['map50']:.4f}", share]
            for key in lat:
                o = lat[key][f"{name}/ort/{method}"]
                p = lat[key][f"{name}/paddle/{method}"]
                cells.append(f"{o['median_ms']:.1f} ({o['speedup_vs_original_ort_fp32']:.2f}x) / "
                             f"{p['median_ms']:.1f}")
            rows.append(cells)
        if "fp32_control" in acc[name]:   # accuracy only: the same network as FP32, so the same speed
            c = acc[name]["fp32_control"]
            rows.append([name, f"FP32 +{res['qat_epochs']} ep (control)", f"{c['map50_95']:.4f}",
                         f"{c['map50']:.4f}", ""] + ["as FP32"] * len(lat))
    headers = ["model", "precision", "mAP@.5:.95", "mAP@.5", "of FP32"] + \
              [f"{k.replace('px_b', ' px b')}: ORT ms (x orig FP32) / Paddle ms" for k in lat]
    return C.fmt_table(headers, rows)


if __name__ == "__main__":
    sys.exit(main())
