"""collate keeps per-image box counts; build_loader is deterministic with and without threads."""

import ppyolo_slim  # noqa: F401  (native import order)
import cv2
import numpy as np
import pytest

from ppyolo_slim.config import DEFAULTS
from ppyolo_slim.data import DetectionDataset, Record, build_loader, collate


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    recs = []
    for i in range(11):
        h, w = (int(v) for v in rng.integers(40, 90, 2))
        cv2.imwrite(str(d / f"{i}.jpg"), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        n = i % 4        # 0..3 boxes, some images with none
        xy = rng.uniform(0, 0.5, (n, 2)) * [w, h]
        wh = rng.uniform(0.2, 0.5, (n, 2)) * [w, h]
        recs.append(Record(str(d / f"{i}.jpg"), 1000 + i, w, h, np.concatenate([xy, xy + wh], 1),
                           rng.integers(0, 3, n)))
    return recs


def test_collate_structure():
    rng = np.random.default_rng(0)
    counts = [2, 0, 3]
    batch = []
    for k, n in enumerate(counts):
        labels = np.concatenate([rng.integers(0, 5, (n, 1)), rng.uniform(0, 1, (n, 4))], 1).astype(np.float32)
        batch.append((rng.uniform(0, 1, (3, 32, 32)).astype(np.float32), labels, {"image_id": k}))
    images, targets, metas = collate(batch)
    assert images.shape == (3, 3, 32, 32) and images.dtype == np.float32
    assert targets.shape == (5, 6) and targets.dtype == np.float32
    assert np.bincount(targets[:, 0].astype(int), minlength=3).tolist() == counts
    for k, (_, labels, _) in enumerate(batch):
        assert np.array_equal(targets[targets[:, 0] == k, 1:], labels)
        assert np.array_equal(images[k], batch[k][0])
    assert [m["image_id"] for m in metas] == [0, 1, 2]
    _, empty, _ = collate([batch[1]])
    assert empty.shape == (0, 6) and empty.dtype == np.float32


def test_loader_covers_every_image_once(records):
    ds = DetectionDataset(records, 64, 3)
    loader = build_loader(ds, batch_size=4, shuffle=True, seed=5)
    assert len(loader) == 3
    seen, boxes = [], 0
    for images, targets, metas in loader:
        assert images.shape[1:] == (3, 64, 64) and len(metas) == len(images)
        seen += [m["image_id"] for m in metas]
        boxes += len(targets)
        for k, m in enumerate(metas):     # targets of image k are that image's boxes
            rec = next(r for r in records if r.image_id == m["image_id"])
            assert (targets[:, 0] == k).sum() == len(rec.boxes)
    assert sorted(seen) == [r.image_id for r in records]
    assert seen != sorted(seen), "shuffled"
    assert boxes == sum(len(r.boxes) for r in records)
    assert len(build_loader(ds, 4, False, drop_last=True)) == 2
    assert sum(len(b[2]) for b in build_loader(ds, 4, False, drop_last=True)) == 8


def ids_of(loader):
    return [[m["image_id"] for m in b[2]] for b in loader]


def test_epochs_reshuffle_and_set_epoch_replays(records):
    ds = DetectionDataset(records, 64, 3)
    loader = build_loader(ds, 4, shuffle=True, seed=1)
    e0, e1 = ids_of(loader), ids_of(loader)
    assert e0 != e1, "each pass is a new epoch"
    loader.set_epoch(0)
    assert ids_of(loader) == e0
    assert ids_of(build_loader(ds, 4, shuffle=False)) == [[1000 + i for i in range(k, min(k + 4, 11))]
                                                           for k in (0, 4, 8)]


def test_threads_give_identical_batches(records):
    aug = dict(DEFAULTS["augment"])
    a = build_loader(DetectionDataset(records, 64, 3, augment=aug, seed=2), 3, True, workers=0, seed=4)
    b = build_loader(DetectionDataset(records, 64, 3, augment=aug, seed=2), 3, True, workers=2, seed=4)
    for _ in range(2):     # two epochs
        for x, y in zip(a, b):
            assert np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1])
            assert [m["image_id"] for m in x[2]] == [m["image_id"] for m in y[2]]
    it = iter(b)           # leaving an epoch early stops the threads cleanly
    next(it)
    it.close()


def test_ranks_split_the_epoch(records):
    ds = DetectionDataset(records, 64, 3)
    parts = [ids_of(build_loader(ds, 2, True, seed=3, rank=r, world_size=2)) for r in (0, 1)]
    flat = [sorted(sum(p, [])) for p in parts]
    assert len(flat[0]) == len(flat[1]) == 6          # 11 padded to 12
    assert set(flat[0]) | set(flat[1]) == {r.image_id for r in records}
    with pytest.raises(ValueError, match="rank 2 outside"):
        build_loader(ds, 2, True, rank=2, world_size=2)
