"""Samples and batches for training and evaluation (the data contract's dataset side).

Every sample draws its randomness from a generator seeded by (seed, epoch, index), so a
sample does not depend on which worker made it or in which order: loading with threads
gives the same batches as loading without.
"""
from __future__ import annotations

import math
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from . import augment as A
from .records import DataError, Record

AUGMENT_KEYS = ("mosaic", "hsv_h", "hsv_s", "hsv_v", "degrees", "translate", "scale", "shear",
                "fliplr", "flipud")


def read_image(path: str) -> np.ndarray:
    """HxWx3 uint8 RGB (EXIF rotation applied), or DataError naming the file."""
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise DataError(f"{path}: cannot read this image (it passed the data check; was it "
                        f"changed or removed since?)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


class DetectionDataset:
    """``ds[i] -> (img float32 [3,S,S] RGB 0..1, labels float32 [n,5] (cls,cx,cy,w,h)/S, meta)``.

    ``augment=None`` gives the plain letterbox (evaluation). A dict with the keys of
    ``cfg.augment`` switches each augmentation; a missing key means off.
    """

    def __init__(self, records: Sequence[Record], img_size: int, nc: int,
                 augment: Optional[Dict[str, Any]] = None, seed: int = 0,
                 cache_images: bool = False):
        if not records:
            raise DataError("DetectionDataset: no records (the data set split is empty)")
        if augment is not None:
            unknown = set(augment) - set(AUGMENT_KEYS)
            if unknown:
                raise ValueError(f"unknown augment key(s) {sorted(unknown)}; known: {AUGMENT_KEYS}")
        for r in records:
            if len(r.classes) and (r.classes.min() < 0 or r.classes.max() >= nc):
                raise DataError(f"{r.path}: class id {int(r.classes.max())} but the model has nc={nc}")
        self.records = list(records)
        self.img_size = int(img_size)
        self.nc = nc
        self.augment = None if augment is None else {k: float(augment.get(k, 0.0) or 0.0)
                                                     for k in AUGMENT_KEYS}
        self.seed = int(seed)
        self.epoch = 0
        self._cache: Optional[Dict[int, Tuple[np.ndarray, float]]] = {} if cache_images else None

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """New random augmentations each epoch, reproducible from (seed, epoch)."""
        self.epoch = int(epoch)

    def __getitem__(self, i: int):
        return self.load(i, self.epoch)

    def _resized(self, i: int) -> Tuple[np.ndarray, float]:
        """Image i with its longer side at img_size, and the factor used."""
        if self._cache is not None and i in self._cache:
            return self._cache[i]
        out = A.resize_long_side(read_image(self.records[i].path), self.img_size)
        if self._cache is not None:
            self._cache[i] = out
        return out

    def load(self, i: int, epoch: int):
        rec = self.records[i]
        S = self.img_size
        meta = {"image_id": rec.image_id, "path": rec.path, "orig_shape": (rec.height, rec.width)}
        aug = self.augment
        if aug is None:
            img, ratio, pad = A.letterbox(read_image(rec.path), S)
            boxes = rec.boxes.astype(np.float64) * ratio + [pad[0], pad[1]] * 2
            classes = rec.classes
        else:
            rng = np.random.default_rng([self.seed, epoch, i])
            if aug["mosaic"] > 0 and rng.uniform() < aug["mosaic"]:
                others = self._mosaic_partners(i, rng)
                tiles, ratios = [], []
                for j in [i] + others:
                    im, r = self._resized(j)
                    tiles.append((im, self.records[j].boxes * r, self.records[j].classes))
                    ratios.append(r)
                img, boxes, classes = A.mosaic(tiles, S, rng)
                img, boxes, classes = A.random_affine(img, boxes, classes, rng, aug["degrees"],
                                                      aug["translate"], aug["scale"], aug["shear"],
                                                      out_size=(S, S))
                ratio, pad = ratios[0], (0.0, 0.0)    # before the mosaic's own placement
                meta["mosaic"] = [self.records[j].image_id for j in [i] + others]
            else:
                im, r0 = self._resized(i)
                img, r1, pad = A.letterbox(im, S, scaleup=False)
                ratio = r0 * r1
                boxes = rec.boxes.astype(np.float64) * ratio + [pad[0], pad[1]] * 2
                img, boxes, classes = A.random_affine(img, boxes, rec.classes, rng, aug["degrees"],
                                                      aug["translate"], aug["scale"], aug["shear"])
            img = A.augment_hsv(img, rng, aug["hsv_h"], aug["hsv_s"], aug["hsv_v"])
            if rng.uniform() < aug["flipud"]:
                img, boxes = A.flip_ud(img, boxes)
                meta["flipud"] = True
            if rng.uniform() < aug["fliplr"]:
                img, boxes = A.flip_lr(img, boxes)
                meta["fliplr"] = True
        meta["ratio"], meta["pad"] = float(ratio), (float(pad[0]), float(pad[1]))
        return to_chw(img), to_labels(boxes, classes, S), meta

    def _mosaic_partners(self, i: int, rng: np.random.Generator) -> List[int]:
        n = len(self.records)
        if n >= 4:     # three other images, all different
            pick = rng.choice(n - 1, 3, replace=False)
            return [int(j + (j >= i)) for j in pick]
        return [int(j) for j in rng.integers(0, n, 3)]


def to_chw(img: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32) * np.float32(1 / 255)


def to_labels(boxes: np.ndarray, classes: np.ndarray, size: int) -> np.ndarray:
    """xyxy pixels + classes -> float32 [n, 5] (cls, cx, cy, w, h) / size."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    out = np.zeros((len(b), 5), np.float32)
    out[:, 0] = np.asarray(classes).reshape(-1)
    out[:, 1] = (b[:, 0] + b[:, 2]) / 2 / size
    out[:, 2] = (b[:, 1] + b[:, 3]) / 2 / size
    out[:, 3] = (b[:, 2] - b[:, 0]) / size
    out[:, 4] = (b[:, 3] - b[:, 1]) / size
    return out


def collate(batch: Sequence[Tuple[np.ndarray, np.ndarray, dict]]):
    """-> (images float32 [B,3,S,S], targets float32 [M,6] (batch_idx, cls, cx, cy, w, h), metas)."""
    images = np.stack([b[0] for b in batch]).astype(np.float32, copy=False)
    parts = [np.concatenate([np.full((len(b[1]), 1), k, np.float32), b[1]], 1)
             for k, b in enumerate(batch)]
    targets = np.concatenate(parts, 0) if parts else np.zeros((0, 6), np.float32)
    return images, targets.reshape(-1, 6).astype(np.float32, copy=False), [b[2] for b in batch]


class DataLoader:
    """Batches of ``collate``d samples. ``len()`` is the number of batches per epoch.

    Each pass over the loader is one epoch: the order (``shuffle``) and the augmentations
    are drawn from (seed, epoch), and the epoch then advances; ``set_epoch`` sets it
    (resume). ``workers > 0`` loads samples in threads (OpenCV releases the GIL), keeping
    the order and the result identical. ``rank``/``world_size`` give each process of a
    data-parallel run its own share (the order padded by wrapping so all get equal counts).
    """

    def __init__(self, dataset: DetectionDataset, batch_size: int, shuffle: bool, workers: int = 0,
                 seed: int = 0, drop_last: bool = False, rank: int = 0, world_size: int = 1):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
        self.dataset, self.batch_size, self.shuffle = dataset, int(batch_size), bool(shuffle)
        self.workers, self.seed, self.drop_last = max(0, int(workers)), int(seed), bool(drop_last)
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _indices(self, epoch: int) -> List[int]:
        n = len(self.dataset)
        order = (np.random.default_rng([self.seed, epoch, 7]).permutation(n) if self.shuffle
                 else np.arange(n))
        if self.world_size > 1:
            per = math.ceil(n / self.world_size)
            order = np.resize(order, per * self.world_size)[self.rank::self.world_size]
        return [int(i) for i in order]

    def __len__(self) -> int:
        n = len(self._indices(0))
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _batches(self, epoch: int) -> List[List[int]]:
        idx = self._indices(epoch)
        out = [idx[k:k + self.batch_size] for k in range(0, len(idx), self.batch_size)]
        if self.drop_last and out and len(out[-1]) < self.batch_size:
            out.pop()
        return out

    def _load_batch(self, ids: List[int], epoch: int):
        return collate([self.dataset.load(i, epoch) for i in ids])

    def __iter__(self) -> Iterator:
        epoch = self.epoch
        self.epoch += 1
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        batches = self._batches(epoch)
        if self.workers == 0:
            for ids in batches:
                yield self._load_batch(ids, epoch)
            return
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="ppyolo-data")
        pending: deque = deque()
        try:
            todo = iter(batches)
            for ids in todo:                 # keep up to 2 batches per worker in flight
                pending.append(pool.submit(self._load_batch, ids, epoch))
                if len(pending) >= 2 * self.workers:
                    break
            while pending:
                result = pending.popleft().result()
                nxt = next(todo, None)
                if nxt is not None:
                    pending.append(pool.submit(self._load_batch, nxt, epoch))
                yield result
        finally:
            for f in pending:
                f.cancel()
            pool.shutdown(wait=True)


def build_loader(dataset: DetectionDataset, batch_size: int, shuffle: bool, workers: int = 0,
                 seed: int = 0, drop_last: bool = False, rank: int = 0,
                 world_size: int = 1) -> DataLoader:
    return DataLoader(dataset, batch_size, shuffle, workers, seed, drop_last, rank, world_size)
