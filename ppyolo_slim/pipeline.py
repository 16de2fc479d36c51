"""The whole job in one call: the dense (unpruned) model, sparse training, 8x pruning,
fine-tuning with the dense model as distillation teacher, evaluation of each stage, export, the TensorRT network (built for real where TensorRT and a GPU exist, else
checked on the CPU), and a summary table.

Stages talk through files under one output folder. ``pipeline_state.json`` (written
atomically after each stage) records what finished, so a rerun continues from the first
unfinished stage; a training stage interrupted midway resumes from its ``last.state``.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

from .config import Config, load_config
from .utils.io import remove_stale_temps, write_json

STAGES = ("dense", "sparse", "prune", "finetune", "export", "deploy", "summary", "quant")
MODELS = ("dense", "sparse", "pruned", "finetuned")
# pipeline.dense_epochs: null: the initial weights serve as the dense model when they were
# trained on this data's classes (the shipped checkpoint on the embedded set), else the dense
# stage trains this many epochs first
AUTO_DENSE_EPOCHS = 30
# the config of each training/pruning stage; relative paths also resolve from the repo root
DEFAULT_CONFIGS = {"sparse": "configs/sparse.yml", "prune": "configs/prune.yml",
                   "finetune": "configs/finetune.yml"}


def _stage_config(path: str, overrides: Sequence[str], out: str, extra: Sequence[str]) -> Config:
    return load_config(path, list(overrides) + list(extra) + [f"output_dir={out}"])


class Pipeline:
    def __init__(self, output: str = "output/pipeline", overrides: Sequence[str] = (),
                 configs: Optional[Dict[str, str]] = None, fresh: bool = False,
                 progress: bool = True, log: Callable[[str], None] = print):
        self.out = os.path.abspath(output)
        self.overrides = list(overrides)
        unknown = set(configs or {}) - set(DEFAULT_CONFIGS)
        if unknown:
            raise ValueError(f"no pipeline stage {sorted(unknown)}; stages with a config: {list(DEFAULT_CONFIGS)}")
        self.configs = {**DEFAULT_CONFIGS, **{k: os.path.normpath(v) for k, v in (configs or {}).items() if v}}
        self.progress, self.log = progress, log
        base = load_config(self.configs["sparse"], self.overrides)   # validates overrides early
        self.scale = float(base["pipeline"]["scale"])
        self.finetune_epochs = int(base["pipeline"]["finetune_epochs"])
        if base["pipeline"]["quant"] != "none":     # refused now, not after hours of training
            from .compat import int8_unsupported
            why = int8_unsupported()
            if why:
                raise ValueError(f"pipeline.quant={base['pipeline']['quant']}: {why}")
        self.state_file = os.path.join(self.out, "pipeline_state.json")
        self.state = self._load_state(fresh)

    # ---- state ---------------------------------------------------------------------------
    def _load_state(self, fresh: bool) -> Dict[str, Any]:
        if not fresh and os.path.isfile(self.state_file):
            try:
                with open(self.state_file, "r", encoding="utf-8") as f:
                    st = json.load(f)
            except (OSError, ValueError) as e:
                raise ValueError(f"{self.state_file}: unreadable pipeline state ({e}); use --fresh "
                                 f"to start over") from None
            if not isinstance(st, dict) or not isinstance(st.get("done"), dict):
                raise ValueError(f"{self.state_file}: not a pipeline state file; use --fresh to start over")
            # the run's settings: its -o overrides and stage configs, compared as given (a state
            # from before configs were recorded ran the defaults)
            ran = {"overrides": st.get("overrides"), "configs": st.get("configs", DEFAULT_CONFIGS)}
            now = {"overrides": self.overrides, "configs": self.configs}
            if ran != now:
                diff = "; ".join(f"{k} {ran[k]} in the run, {now[k]} now" for k in ran if ran[k] != now[k])
                raise ValueError(f"{self.state_file}: this folder holds a run with other settings "
                                 f"({diff}); use --fresh to start over, or another --output")
            return st
        return {"overrides": self.overrides, "configs": self.configs, "done": {},
                "started": time.strftime("%Y-%m-%dT%H:%M:%S")}

    def _save_state(self) -> None:
        write_json(self.state_file, self.state)

    def path(self, *p: str) -> str:
        return os.path.join(self.out, *p)

    # ---- stages --------------------------------------------------------------------------
    def run(self, until: Optional[str] = None) -> Dict[str, Any]:
        os.makedirs(self.out, exist_ok=True)
        self.check_requirements()
        for p in remove_stale_temps(self.out, recursive=True):
            self.log(f"[pipeline] removed {p}: left by a killed run")
        for stage in STAGES:
            if stage in self.state["done"]:
                self.log(f"[pipeline] {stage}: done before, skipped")
            else:
                self.log(f"[pipeline] {stage} ...")
                t0 = time.time()
                result = getattr(self, f"stage_{stage}")()
                result["seconds"] = round(time.time() - t0, 1)
                self.state["done"][stage] = result
                self._save_state()
                self.log(_stage_done(stage, result))
            if stage == until:
                break
        return self.state

    def check_requirements(self) -> None:
        """A missing PaddleSlim (a separate ``--no-deps`` install on Paddle 3) is said before the
        sparse stage's minutes of training, not after them (ModuleNotFoundError)."""
        if "prune" not in self.state["done"]:
            from .compat import import_paddleslim
            import_paddleslim()

    def _epochs(self, n: int) -> int:
        return max(1, int(round(n * self.scale)))

    def _train(self, stage: str, extra: List[str], config: Optional[str] = None) -> Dict[str, Any]:
        from .engine.trainer import train
        out = self.path(stage)
        cfg = _stage_config(self.configs[config or stage], self.overrides, out, extra)
        last = os.path.join(out, "last.pdparams")
        resume = last if os.path.isfile(os.path.join(out, "last.state")) else None
        if resume:
            self.log(f"[pipeline] {stage}: resuming from {last}")
        summary = train(cfg, resume=resume, progress=self.progress)
        return {"weights": summary["best"], "train_s": summary["train_s"], "epochs": summary["epochs"],
                "best_map50_95": summary["best_fitness"]}

    def stage_dense(self):
        """The unpruned model: the sparse stage starts from it, the fine-tune learns from it,
        and the summary measures what slimming keeps against it."""
        base = load_config(self.configs["sparse"], self.overrides)
        epochs = base["pipeline"]["dense_epochs"]
        init = base["weights"]
        if epochs is None:
            epochs = 0 if init and _trained_on(init, base["data"]) else AUTO_DENSE_EPOCHS
        if epochs == 0:
            if not init:
                raise ValueError("pipeline.dense_epochs=0 needs initial weights (-o weights=PATH)")
            self.log(f"[pipeline] dense: {init} (trained on this data's classes) is the dense model")
            return {"weights": os.path.abspath(init), "trained": False}
        self.log(f"[pipeline] dense: training the unpruned model {self._epochs(int(epochs))} epochs "
                 f"from {init or 'random init'}")
        return {**self._train("dense", [f"epochs={self._epochs(int(epochs))}", "sparsity.enabled=false"],
                              config="sparse"), "trained": True, "init": init or None}

    def stage_sparse(self):
        base = load_config(self.configs["sparse"], self.overrides)
        return self._train("sparse", [f"epochs={self._epochs(int(base['epochs']))}",
                                      f"weights={self.state['done']['dense']['weights']}"])

    def stage_prune(self):
        from .slim.selection import PruneConfig
        from .slim.workflow import prune_checkpoint, val_evaluator
        cfg = _stage_config(self.configs["prune"], self.overrides, self.path("prune"), [])
        settings = PruneConfig.of(cfg)
        kw = dict(img_size=int(cfg["img_size"]), evaluate=val_evaluator(cfg), log=self.log)
        if settings.steps:    # progressive: fine-tunes between the cuts, the dense model teaching
            from .slim.progressive import progressive_prune, trainer_between
            teach = [f"distill.teacher={self.state['done']['dense']['weights']}"]
            between = trainer_between(self.configs["finetune"], list(self.overrides) + teach,
                                      self._epochs(settings.step_epochs), progress=self.progress)
            rep = progressive_prune(self.state["done"]["sparse"]["weights"], self.path("prune"), settings.steps,
                                    prune=prune_checkpoint, train_between=between, settings=settings, **kw)
        else:
            rep = prune_checkpoint(self.state["done"]["sparse"]["weights"], self.path("prune"), settings, **kw)
        return {"weights": rep["paths"]["weights"], "report": rep["paths"]["report"]}

    def stage_finetune(self):
        # the teacher is the dense model (with the gradual method the sparse model already
        # holds the cut's channels at zero: it would teach what the student knows)
        return self._train("finetune", [f"weights={self.state['done']['prune']['weights']}",
                                        f"epochs={self._epochs(self.finetune_epochs)}",
                                        f"distill.teacher={self.state['done']['dense']['weights']}"])

    def _weights(self) -> Dict[str, str]:
        d = self.state["done"]
        return {"dense": d["dense"]["weights"], "sparse": d["sparse"]["weights"],
                "pruned": d["prune"]["weights"], "finetuned": d["finetune"]["weights"]}

    def stage_export(self):
        from .export.exporter import export_model
        cfg = load_config(self.configs["sparse"], self.overrides)
        out = {}
        ex = cfg["export"]
        for name, w in self._weights().items():
            rep = export_model(w, self.path("export", name), img_size=int(cfg["img_size"]),
                               batch=None if ex["dynamic_batch"] else 1, opset=int(ex["opset"]),
                               nms=bool(ex["nms"]), log=self.log)
            out[name] = {"dir": self.path("export", name), "onnx": os.path.join(self.path("export", name), "model.onnx")}
            out[name]["max_diff"] = {k: v for k, v in rep.items() if "diff" in k}
        return out

    def stage_deploy(self):
        from .deploy.trt_compat import gpu_status, import_tensorrt, TensorRTUnavailable
        cfg = load_config(self.configs["sparse"], self.overrides)
        size = int(cfg["img_size"])
        try:
            import_tensorrt()
            have_gpu, why = gpu_status()
        except TensorRTUnavailable as e:
            have_gpu, why = False, str(e).splitlines()[0]
        result: Dict[str, Any] = {"tensorrt": have_gpu, "why": why}
        if have_gpu:
            from .deploy.engine import EngineOptions, build_engine
            for name in ("sparse", "finetuned"):
                eng = self.path("deploy", f"{name}.engine")
                result[name] = build_engine(self._weights()[name], eng, EngineOptions(img_size=size),
                                            log=self.log)
        else:   # the same layer calls, executed in NumPy and compared with Paddle
            from .deploy.check import check_against_paddle
            for name in ("sparse", "finetuned"):
                rep = check_against_paddle(self._weights()[name], img_size=size)
                result[name] = {"cpu_check_max_abs_diff": rep.max_abs_diff, "passed": rep.passed,
                                "layers": rep.layers, "tolerance": rep.tolerance}
                if not rep.passed:
                    raise RuntimeError(f"deploy check failed for {name}: max abs diff {rep.max_abs_diff}")
        return result

    def stage_summary(self):
        from .summary import summarize
        cfg = load_config(self.configs["sparse"], self.overrides)
        exports = self.state["done"]["export"]
        onnx = {k: exports[k]["onnx"] for k in MODELS}
        rows = summarize(self._weights(), onnx, cfg, self.out, log=self.log, stages=self.state["done"])
        rows["wall_s"] = sum(self.state["done"][s].get("seconds", 0) for s in self.state["done"])
        return rows


    def stage_quant(self):
        """Optional (-o pipeline.quant=ptq|qat): INT8 of the fine-tuned model (slim/quant.py),
        added to summary.json / summary.md as models.int8, timed against the sparse model."""
        from .data import load_data
        from .slim.quant import ONNX_INT8
        base = load_config(self.configs["sparse"], self.overrides)
        method = base["pipeline"]["quant"]
        if method == "none":
            return {"skipped": True}
        from .engine.evaluate import EvalConfig, evaluate_model
        from .export.runtime import OnnxPredictor
        from .summary import format_report, ort_latency
        from .utils.io import write_json
        from .utils.io import atomic_write_bytes
        from .slim import quant
        out = self.path("int8")
        src = self.state["done"]["finetune"]["weights"]
        extra = [f"output_dir={self.path('int8_train')}", f"weights={src}", "quant.qat=true",
                 f"epochs={self._epochs(int(load_config('configs/quant.yml', self.overrides)['epochs']))}"]
        if method == "ptq":
            quant.ptq(src, out, load_config("configs/quant.yml", self.overrides), log=self.log)
        else:
            from .engine.trainer import train
            cfg = load_config("configs/quant.yml", self.overrides + extra)
            last = self.path("int8_train", "last.pdparams")
            summary = train(cfg, resume=last if os.path.isfile(last[:-len(".pdparams")] + ".state") else None,
                            progress=self.progress)
            quant.qat_export(summary["best"] if os.path.isfile(summary["best"]) else summary["last"], out, cfg,
                             log=self.log)
        with open(self.path("summary.json"), "r", encoding="utf-8") as f:
            result = json.load(f)
        size, onnx_path = int(result["img_size"]), os.path.join(out, ONNX_INT8)
        spec = load_data(base["data"], verbose=False)
        ev = EvalConfig.of(base)
        metrics, _ = evaluate_model(OnnxPredictor(onnx_path, device="cpu"), spec.val, spec.names, size,
                                    ev.batch_size, ev.conf_thres, ev.iou_thres, ev.max_det)
        lat = ort_latency({"sparse": self.state["done"]["export"]["sparse"]["onnx"], "int8": onnx_path}, size)
        ft = result["models"]["finetuned"]
        row = {k: ft[k] for k in ("params", "gflops", "gflops_640", "flops_ratio_vs_sparse")}
        row.update({"weights": src, "method": method, "onnx": onnx_path, "map50_95": metrics["map50_95"],
                    "map50": metrics["map50"], "pdparams_mb": os.path.getsize(os.path.join(out, "model.pdiparams")) / 2**20,
                    "onnx_mb": os.path.getsize(onnx_path) / 2**20,
                    "ort_cpu_median_ms": lat["int8"]["median_ms"], "ort_cpu_p90_ms": lat["int8"]["p90_ms"],
                    "speedup_vs_sparse": lat["sparse"]["median_ms"] / lat["int8"]["median_ms"],
                    "label": f"int8 ({method.upper()})"})
        dense = result["models"].get("dense")
        if dense:
            row["map_retention_vs_dense"] = row["map50_95"] / max(dense["map50_95"], 1e-12)
        result["models"]["int8"] = row
        write_json(self.path("summary.json"), result)
        atomic_write_bytes(self.path("summary.md"), (format_report(result) + "\n").encode())
        return {"dir": out, "onnx": onnx_path, "method": method, "map50_95": row["map50_95"]}


def _stage_done(stage: str, result: Dict[str, Any]) -> str:
    """One line per finished stage: its time and, for a training stage, its best val mAP
    (with --no-progress the only sign of how a 15-minute stage went)."""
    text = f"[pipeline] {stage}: done in {result['seconds'] / 60:.1f} min"
    if result.get("best_map50_95") is not None:
        text += f", best mAP@0.5:0.95 {result['best_map50_95']:.4f} ({result.get('epochs', '?')} epochs)"
    return text


def _trained_on(weights: str, data: str) -> bool:
    """Whether ``weights`` (its metadata) were trained on ``data``'s classes, in order."""
    from .data import load_data
    from .model import read_weights
    _, meta = read_weights(weights)
    # quiet: the dense or sparse stage's trainer prints the data summary next, once
    return list(meta.names or []) == list(load_data(data, verbose=False).names)


def run_pipeline(output: str = "output/pipeline", overrides: Sequence[str] = (), fresh: bool = False,
                 until: Optional[str] = None, progress: bool = True,
                 log: Callable[[str], None] = print,
                 configs: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """``configs``: stage -> config file, for stages sparse, prune, finetune (default DEFAULT_CONFIGS)."""
    return Pipeline(output, overrides, configs=configs, fresh=fresh, progress=progress, log=log).run(until)
