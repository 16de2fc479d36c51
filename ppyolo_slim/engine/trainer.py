"""The training loop: the YOLOv5 recipe (ultralytics train.py), open through callbacks.

One Trainer serves sparse training, fine-tuning of pruned models (with or without a
distillation teacher) and plain training; the config says which, and the components that
join a run (sparsity, distillation, γ logging) are callbacks (``callbacks.py``) registered
by their own modules. Rank 0 alone evaluates, logs and writes files.
"""
from __future__ import annotations

import math
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import paddle

from ..config import DEFAULTS, Config, dump_config
from ..model import ModelMeta, assign_state, build_model, load_weights
from ..model.spec import SCALES
from ..utils.io import remove_stale_temps, write_json
from ..utils.runtime import seed_everything, select_device, set_cpu_threads
from .callbacks import CallbackList, model_hooks, registered_callbacks
from .checkpoint import load_checkpoint, save_checkpoint, writing
from .ema import ModelEMA
from .evaluate import EvalConfig
from .logger import make_logger
from .optim import Optimizer


class TrainingDiverged(RuntimeError):
    """A NaN or inf in the loss or the gradients; the last good checkpoint is intact."""


class Trainer:
    def __init__(self, cfg: Config, rank: int = 0, world_size: int = 1, resume: Optional[str] = None,
                 progress: bool = True, callbacks: Sequence[Any] = ()):
        self.cfg, self.rank, self.world = cfg, rank, world_size
        self._extra_callbacks = list(callbacks)   # Callback objects (or duck-typed hooks)
        self.extra_items: Dict[str, float] = {}    # the callbacks' loss terms, for the logs
        self.out = cfg["output_dir"]
        self.progress = progress and rank == 0
        self.device = select_device(cfg["device"])
        self.threads = set_cpu_threads(int(cfg["threads"]), world_size) if self.device == "cpu" else 0
        self.amp = bool(cfg["amp"]) and self.device.startswith("gpu")
        seed_everything(int(cfg["seed"]))   # same init on every rank
        self.resume_path = resume
        self.resume_state = load_checkpoint(resume) if resume else None
        if rank == 0:
            for p in remove_stale_temps(self.out):
                print(f"removed {p}: a temporary file left by a killed run", file=sys.stderr)
        self._setup_data()
        self._setup_model()
        self._setup_optim()
        self.logger = make_logger(self.out, bool(cfg["log"]["visualdl"]), rank)
        # config-driven components first (sparsity, distillation), then the caller's
        self.callbacks = CallbackList(registered_callbacks(self) + self._extra_callbacks)
        self.history: List[Dict[str, Any]] = []
        if self.resume_state:
            self._restore(self.resume_state)

    # ---- setup -------------------------------------------------------------------------
    def _setup_data(self):
        from ..data import DetectionDataset, build_loader, load_data
        cfg = self.cfg
        self.data = load_data(cfg["data"], verbose=self.rank == 0)   # one data summary, not one per rank
        self.names = list(self.data.names)
        self.nc = len(self.names)
        aug = dict(cfg["augment"])
        self.train_ds = DetectionDataset(self.data.train, int(cfg["img_size"]), self.nc,
                                         augment=aug, seed=int(cfg["seed"]),
                                         cache_images=bool(cfg["cache_images"]))
        self.batch_size = int(cfg["batch_size"])
        self.train_loader = build_loader(self.train_ds, self.batch_size, shuffle=True,
                                         workers=int(cfg["workers"]), seed=int(cfg["seed"]),
                                         rank=self.rank, world_size=self.world)
        self.nb = len(self.train_loader)

    def _meta(self, stage: str, extra: Optional[dict] = None) -> ModelMeta:
        cfg = self.cfg
        anchors = self.base_meta.anchors
        return ModelMeta(nc=self.nc, names=self.names, depth_multiple=self.base_meta.depth_multiple,
                         width_multiple=self.base_meta.width_multiple, anchors=anchors,
                         img_size=int(cfg["img_size"]),
                         made_by={"stage": stage, "tool": "tools/train.py", "config": cfg.get("_source"),
                                  "data": self.data.source, "init_weights": cfg["weights"],
                                  **(extra or {})})

    def _setup_model(self):
        cfg = self.cfg
        mcfg = cfg["model"]
        gd, gw = SCALES[mcfg["scale"]] if mcfg["scale"] in SCALES else (None, None)
        if mcfg["scale"] not in SCALES and (mcfg["depth_multiple"] is None or mcfg["width_multiple"] is None):
            raise ValueError(f"model.scale {mcfg['scale']!r} is not one of {sorted(SCALES)}; "
                             f"give model.depth_multiple and model.width_multiple instead")
        gd = mcfg["depth_multiple"] if mcfg["depth_multiple"] is not None else gd
        gw = mcfg["width_multiple"] if mcfg["width_multiple"] is not None else gw
        anchors = mcfg["anchors"]
        state = None
        if self.resume_state is not None:
            state, wmeta = self.resume_state["model"], self.resume_state["meta"]
        elif cfg["weights"]:
            state, wmeta = load_weights(cfg["weights"])
            wmeta = wmeta or {}
        hooks = model_hooks(cfg)     # e.g. QAT: a QAT checkpoint builds float, is wrapped below
        extras = []
        for h in hooks:
            if state is not None:
                state, extra = h.split_state(cfg, state)
            else:
                extra = None
            extras.append(extra)
        if state is not None:
            gd = wmeta.get("depth_multiple", gd)
            gw = wmeta.get("width_multiple", gw)
            anchors = anchors or wmeta.get("anchors")
        self.base_meta = ModelMeta(nc=self.nc, names=self.names, depth_multiple=gd, width_multiple=gw,
                                   **({"anchors": anchors} if anchors else {}))
        if state is None:
            self.model = build_model(self.base_meta)   # Detect priors set once, in YOLOv5.__init__
            self.init_report = "random init"
        else:
            # shapes come from the weights (pruned models); a head for another nc is re-made
            head = [k for k in state if k.startswith(self.detect_prefix(state))]
            same_nc = all(state[k].shape[0] == 3 * (self.nc + 5) for k in head)
            source = "resume state" if self.resume_state is not None else cfg["weights"]
            if same_nc:
                self.model = build_model(self.base_meta, state, source=source)
                self.init_report = f"{len(state)} tensors from {source}"
            else:   # another nc: keep the body, make a new head (as ultralytics transfer learning)
                body = {k: v for k, v in state.items() if k not in head}
                self.model = self._build_new_head(body)
                self.init_report = f"{len(body)} tensors from {source}, new {self.nc}-class head"
        self.model.train()
        for h, extra in zip(hooks, extras):   # before EMA and optimizer see the model
            h.wrap(cfg, self.model, extra)
        self.cpu_ops = {}
        if self.device == "cpu" and not hooks:   # QAT wraps layers its own way: left alone
            from .cpu_ops import use_cpu_ops
            self.cpu_ops = use_cpu_ops(self.model, cfg["cpu_ops"],
                                       log=(lambda m: print(m, file=sys.stderr)) if self.rank == 0 else (lambda m: None))
        self.core = self.model
        if self.world > 1:
            self.model = paddle.DataParallel(self.core)

    @staticmethod
    def detect_prefix(state) -> str:
        idx = max(int(k.split(".")[1]) for k in state if k.startswith("model."))
        return f"model.{idx}.m."

    def _build_new_head(self, body):
        from ..model.yolo import YOLOv5
        from ..model import netspec_from_meta
        model = YOLOv5(netspec_from_meta(self.base_meta), {k: v.shape for k, v in body.items()})
        model.detect.init_biases()   # a new head gets ultralytics' priors (computed for 640, as there)
        assign_state(model, body, strict=False)
        return model

    def _setup_optim(self):
        from .loss import ComputeLoss
        cfg = self.cfg
        nbs = int(cfg["nominal_batch_size"])
        self.accumulate = max(round(nbs / (self.batch_size * self.world)), 1)
        wd_scale = self.batch_size * self.world * self.accumulate / nbs
        self.epochs = int(cfg["epochs"])
        self.optimizer = Optimizer(self.core, cfg["optimizer"], cfg["schedule"], self.epochs, self.nb,
                                   weight_decay_scale=wd_scale)
        self.ema = (ModelEMA(self.core, cfg["ema"]["decay"], cfg["ema"]["tau"])
                    if cfg["ema"]["enabled"] and self.rank == 0 else None)
        det = self.core.detect
        self.compute_loss = ComputeLoss(det.anchors.numpy(), det.stride, self.nc, dict(cfg["loss"]),
                                        int(cfg["img_size"]))
        self.scaler = paddle.amp.GradScaler(init_loss_scaling=2.0 ** 16) if self.amp else None
        self.start_epoch = 0
        self.best_fitness = -1.0

    def _restore(self, st: Dict[str, Any]):
        tr = st["train"]
        problems, changed = resume_conflicts(tr.get("config"), self.cfg, self.resume_path)
        if changed and self.rank == 0:
            print("resume: changed from the run: " + "; ".join(changed), file=sys.stderr)
        if problems:
            raise ValueError(f"cannot resume {self.resume_path} with this config: " + "; ".join(problems)
                             + ". Resume with the run's own config (tools/train.py --resume PATH without -c), "
                             "or start a new run from these weights with --weights")
        if self.ema is not None and st.get("ema") is not None:
            assign_state(self.ema.ema, st["ema"], source="resume state (ema)")
            self.ema.updates = int(tr.get("ema_updates", 0))
        if st.get("optimizer") is not None:
            self.optimizer.set_state_dict(st["optimizer"])
        self.start_epoch = int(tr["epoch"]) + 1
        self.best_fitness = float(tr.get("best_fitness", -1.0))
        self.history = list(tr.get("history", []))
        if self.start_epoch >= self.epochs and self.rank == 0:
            print(f"resume: the run already finished {self.epochs} epochs; raise epochs with "
                  f"-o epochs=N to train longer", file=sys.stderr)
        elif self.rank == 0:
            print(f"resuming {self.resume_path} from epoch {self.start_epoch + 1} of {self.epochs} "
                  f"(best mAP@0.5:0.95 so far {max(self.best_fitness, 0.0):.4f})", file=sys.stderr)

    # ---- loop --------------------------------------------------------------------------
    def train(self) -> Dict[str, Any]:
        cfg = self.cfg
        if self.rank == 0:
            os.makedirs(self.out, exist_ok=True)
            dump_config(cfg, os.path.join(self.out, "config.yml"))
        if self.rank == 0 and self.resume_state is not None and self.start_epoch >= self.epochs:
            self._write_missing_last()
        seed = int(cfg["seed"])
        self.callbacks.on_train_start(self)
        t_start = time.time()
        for epoch in range(self.start_epoch, self.epochs):
            # Per-epoch seeding: a run resumed at an epoch boundary replays the same random stream.
            seed_everything(seed + 1000 * epoch + self.rank)
            loader = self.train_loader
            loader.set_epoch(epoch)   # order and augmentations drawn from (seed, epoch)
            self.model.train()
            # every epoch ends with an optimizer step, so accumulation restarts here (also on resume)
            last_opt_step = self.nb * epoch - 1
            mloss = np.zeros(3)
            bar = self._bar(loader, epoch)
            t_epoch = time.time()
            n_img = 0
            for i, (imgs, targets, _) in enumerate(bar):
                t0 = time.time()
                ni = i + self.nb * epoch
                lrs = self.optimizer.set_step(ni, epoch)
                loss, items = self._forward_backward(imgs, targets, epoch, i)
                if ni - last_opt_step >= self.accumulate or i == len(loader) - 1:
                    self._optimizer_step(epoch + (i + 1) / self.nb, epoch, i)
                    last_opt_step = ni
                mloss = (mloss * i + items) / (i + 1)
                n_img += imgs.shape[0]
                dt = time.time() - t0
                if self.rank == 0:
                    if hasattr(bar, "set_postfix_str"):
                        bar.set_postfix_str(f"box {mloss[0]:.4f} obj {mloss[1]:.4f} cls {mloss[2]:.4f} "
                                            f"lr {lrs['weights']:.2e} {imgs.shape[0] / dt:.1f} img/s")
                    if ni % int(cfg["log"]["interval"]) == 0:
                        self.logger.scalars({"train/box_loss": items[0], "train/obj_loss": items[1],
                                             "train/cls_loss": items[2], "train/loss": float(items.sum()),
                                             "lr/weights": lrs["weights"], "lr/bn": lrs["bn"],
                                             "lr/bias": lrs["bias"], "time/step_ms": 1000 * dt,
                                             "time/img_per_s": imgs.shape[0] / dt,
                                             **{f"train/{k}": v for k, v in self.extra_items.items()}}, ni)
            if self.world > 1:
                self._average_bn_statistics()
            record = {"epoch": epoch, "box_loss": mloss[0], "obj_loss": mloss[1], "cls_loss": mloss[2],
                      "lr": self.optimizer.lrs["weights"], "epoch_s": time.time() - t_epoch,
                      "img_per_s": n_img / max(time.time() - t_epoch, 1e-9)}
            self.callbacks.on_epoch_end(self, epoch, record)   # may add to the record (γ stats)
            if self.rank == 0:
                record.update(self._end_epoch(epoch))
                self.history.append({k: float(v) if isinstance(v, (np.floating, float)) else v
                                     for k, v in record.items()})
                self._save(epoch, record)
            self.callbacks.on_save(self, epoch, record)
        summary = {"epochs": self.epochs, "best_fitness": self.best_fitness,
                   "train_s": time.time() - t_start, "history": self.history,
                   "best": os.path.join(self.out, "best.pdparams"),
                   "last": os.path.join(self.out, "last.pdparams"),
                   "cpu_ops": self.cpu_ops}      # layers on the custom CPU ops (engine/cpu_ops)
        if self.world > 1:
            summary["rank_weight_digests"] = self._gather_digests()
        if self.rank == 0:
            write_json(os.path.join(self.out, "results.json"), summary)
        self.logger.close()
        return summary

    @paddle.no_grad()
    def _average_bn_statistics(self):
        """DataParallel syncs gradients, not BN running statistics: each rank's reflect only
        its own images. Average them so every rank (and the checkpoint) has all the data's."""
        import paddle.distributed as dist
        for k, v in self.core.state_dict().items():
            if k.endswith(("._mean", "._variance")):
                t = v.clone()
                dist.all_reduce(t)
                v.set_value(t / self.world)

    def _gather_digests(self) -> List[str]:
        """Every rank's weight fingerprint; data-parallel ranks must end identical."""
        import hashlib
        import paddle.distributed as dist
        h = hashlib.sha256()
        for k, v in sorted(self.core.state_dict().items()):
            h.update(k.encode())
            h.update(np.ascontiguousarray(v.numpy()).tobytes())
        digests: List[str] = []
        dist.all_gather_object(digests, h.hexdigest())
        if self.rank == 0 and len(set(digests)) > 1:
            print(f"warning: data-parallel ranks ended with different weights: {digests}", file=sys.stderr)
        return digests

    def _bar(self, loader, epoch):
        if not self.progress:
            return loader
        from tqdm import tqdm
        return tqdm(loader, desc=f"epoch {epoch + 1}/{self.epochs}", total=len(loader), file=sys.stderr,
                    dynamic_ncols=True, leave=True)

    def _forward_backward(self, imgs, targets, epoch, i):
        x = paddle.to_tensor(imgs)
        t = paddle.to_tensor(targets)
        if self.amp:
            with paddle.amp.auto_cast():
                preds = self.model(x)
            preds = [p.astype("float32") for p in preds]
        else:
            preds = self.model(x)
        loss, items = self.compute_loss(preds, t)
        extra = self.callbacks.extra_loss(self, x, preds)   # e.g. distillation from a teacher
        self.extra_items = {}
        if extra is not None:
            loss = loss + extra[0]
            self.extra_items = dict(extra[1])
        if self.world > 1:
            loss = loss * self.world   # DataParallel averages gradients over ranks (ultralytics does this)
        lv = float(loss)
        if not math.isfinite(lv):
            raise TrainingDiverged(
                f"epoch {epoch + 1}, step {i}: the loss is {lv} (box {items[0]:.4g}, obj {items[1]:.4g}, "
                f"cls {items[2]:.4g}). Likely causes: a learning rate too high for this batch "
                f"(optimizer.lr0={self.cfg['optimizer']['lr0']}), or bad labels. Training stopped; "
                f"the last good checkpoint in {self.out} is intact.")
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()
        return loss, np.asarray(items, dtype="float64")

    def _optimizer_step(self, epoch_float: float, epoch: int, i: int):
        if self.scaler is not None:   # callbacks (the L1 subgradient) must see true gradients
            self.scaler.unscale_(self.optimizer.opt)
        self.callbacks.on_after_backward(self, epoch_float)
        bad = [p.name for p in self.core.parameters()
               if p.grad is not None and not bool(paddle.isfinite(p.grad).all())]
        if bad and self.scaler is None:
            raise TrainingDiverged(
                f"epoch {epoch + 1}, step {i}: NaN or inf in the gradients of {len(bad)} parameters "
                f"(first: {bad[0]}). Likely causes: a learning rate too high or a corrupt batch. "
                f"Training stopped; the last good checkpoint in {self.out} is intact.")
        if self.scaler is not None:
            self.scaler.step(self.optimizer.opt)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.clear_grad()
        self.callbacks.on_after_step(self, epoch_float)   # proximal steps, masks (before EMA sees them)
        if self.ema is not None:
            self.ema.update(self.core)

    # ---- epoch end: eval, logs, checkpoints ------------------------------------------------
    def eval_model(self):
        return self.ema.ema if self.ema is not None else self.core

    def _end_epoch(self, epoch: int) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        interval = EvalConfig.of(self.cfg).interval
        if (epoch + 1) % interval == 0 or epoch + 1 == self.epochs:
            out.update(self.evaluate(epoch))
        return out

    def evaluate(self, epoch: int) -> Dict[str, Any]:
        from .evaluate import evaluate_model
        from .predict import DygraphPredictor
        ev = EvalConfig.of(self.cfg)
        model = self.eval_model()
        metrics, dets = evaluate_model(DygraphPredictor(model, self.names), self.data.val, self.names,
                                       int(self.cfg["img_size"]), ev.batch_size, ev.conf_thres,
                                       ev.iou_thres, ev.max_det)
        self.logger.scalars({"val/mAP50": metrics["map50"], "val/mAP50-95": metrics["map50_95"]}, epoch)
        self._log_images(dets, epoch)
        if self.rank == 0 and self.progress:
            print(f"epoch {epoch + 1}: mAP@0.5 {metrics['map50']:.4f}  mAP@0.5:0.95 {metrics['map50_95']:.4f}",
                  file=sys.stderr)
        return {"map50": float(metrics["map50"]), "map50_95": float(metrics["map50_95"])}

    def _log_images(self, dets, epoch: int):
        n = int(self.cfg["log"]["images"])
        if n <= 0 or not hasattr(self.logger, "writer"):
            return
        import cv2
        from .draw import draw_detections
        for rec in self.data.val[:n]:
            img = cv2.imread(rec.path)
            if img is None:
                continue
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
            for b in np.asarray(rec.boxes).reshape(-1, 4).astype(int):   # truth: thin white
                cv2.rectangle(img, (int(b[0]), int(b[1])), (int(b[2]), int(b[3])), (255, 255, 255), 1)
            d = dets.get(int(rec.image_id), np.zeros((0, 6)))
            img = draw_detections(img, d[d[:, 4] >= 0.25], self.names)
            self.logger.image(f"val/{os.path.basename(rec.path)}", img, epoch)

    def _stage(self) -> str:
        if self.cfg["quant"]["qat"]:
            return "qat"
        if self.cfg["sparsity"]["enabled"]:
            return "sparse"
        return "finetune" if self.cfg["weights"] else "train"

    def _write_missing_last(self):
        """A run killed after its final last.state but before last.pdparams: write the weights
        file from the state, so a resumed finished run has both files, of the same epoch."""
        from ..model import CheckpointError, save_weights
        last = os.path.join(self.out, "last.pdparams")
        tr = self.resume_state["train"]
        if os.path.isfile(last):
            try:
                if ((load_weights(last)[1] or {}).get("train") or {}).get("epoch") == tr["epoch"]:
                    return
            except CheckpointError:
                pass
        meta = self._meta(self._stage(), {"epoch": int(tr["epoch"]) + 1, "epochs": self.epochs})
        with writing(last):
            save_weights(last, self.eval_model().state_dict(), meta,
                         extra={"train": {k: tr[k] for k in ("epoch", "best_fitness") if k in tr}})

    def _save(self, epoch: int, record: Dict[str, Any]):
        fitness = record.get("map50_95")
        meta = self._meta(self._stage(), {"epoch": epoch + 1, "epochs": self.epochs})
        # a callback may rule an epoch out (the gradual method, before its masks are complete)
        is_best = fitness is not None and fitness > self.best_fitness and record.get("best_eligible", True)
        if is_best:
            self.best_fitness = float(fitness)
        train = {"epoch": epoch, "best_fitness": self.best_fitness,
                 "ema_updates": self.ema.updates if self.ema else 0,
                 "history": self.history, "config": {k: v for k, v in self.cfg.items() if not k.startswith("_")}}
        # best first: a kill between the two then re-runs this epoch on resume and writes best
        # again; the other order could leave a state that counts a best never written.
        if is_best:
            from ..model import save_weights
            best = os.path.join(self.out, "best.pdparams")
            with writing(best):
                save_weights(best, self.eval_model().state_dict(), meta,
                             extra={"train": {"epoch": epoch, "best_fitness": self.best_fitness}})
        save_checkpoint(os.path.join(self.out, "last.pdparams"), self.core, self.ema, self.optimizer,
                        meta, train)


# What a run is: resuming it under other values of these would silently train another model
# (the fine-tune state resumed with sparse.yml, say). Other keys may change on resume (a lower
# LR, mosaic off for the last epochs, more epochs); the trainer prints what changed.
RUN_DEFINING = ("model", "data", "img_size", "optimizer.type", "sparsity.enabled")


def _leaves(d: Any, prefix: str = "") -> Dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out: Dict[str, Any] = {}
    for k, v in d.items():
        out.update(_leaves(v, f"{prefix}{k}."))
    return out


def resume_conflicts(saved: Optional[Dict[str, Any]], cfg: Config, resume_path: Optional[str]
                     ) -> Tuple[List[str], List[str]]:
    """(what forbids resuming ``resume_path`` with ``cfg``, what else changed from the run)."""
    problems = []
    if resume_path and os.path.realpath(cfg["output_dir"]) != os.path.dirname(os.path.realpath(resume_path)):
        problems.append(f"it would write to output_dir={cfg['output_dir']}, not to the run's own folder "
                        f"{os.path.dirname(resume_path) or '.'}")
    if not saved:
        return problems, []     # a state from before configs were saved: nothing to compare
    want = _leaves({k: v for k, v in saved.items() if k in DEFAULTS})   # not keys retired since
    have = _leaves({k: v for k, v in cfg.items() if not k.startswith("_")})
    changed = []
    for k in sorted(set(want) | set(have)):
        a, b = want.get(k), have.get(k)
        if a == b or k in ("output_dir", "weights") or (k == "data" and _same_data(a, b)):
            continue
        if k not in want and b == _leaves(DEFAULTS).get(k):
            continue    # a key added since the run, at its default: nothing changed

        what = f"{k} was {a!r} in the run, is {b!r} now"
        (problems if any(k == d or k.startswith(d + ".") for d in RUN_DEFINING) else changed).append(what)
    return problems, changed


def _same_data(a: Any, b: Any) -> bool:
    return (isinstance(a, str) and isinstance(b, str) and os.path.exists(a)
            and os.path.realpath(a) == os.path.realpath(b))


def train(cfg: Config, resume: Optional[str] = None, rank: int = 0, world_size: int = 1,
          progress: bool = True, callbacks: Sequence[Any] = ()) -> Dict[str, Any]:
    return Trainer(cfg, rank, world_size, resume, progress, callbacks).train()
