"""Bad input, one case per test: extreme images, weights of another model size, nc or pickle
protocol. (Truncated / zero-byte images, zero-area boxes, NaN coordinates, unknown classes and
code payloads have their tests in test_data_checks.py and test_weights.py: see the README table.)
"""
import os
import resource
import struct
import zlib

import cv2
import numpy as np
import paddle
import pickle
import pytest

import ppyolo_slim
from conftest import tiny_train_overrides
from ppyolo_slim.config import load_config
from ppyolo_slim.data import DetectionDataset, load_data
from ppyolo_slim.model import (ModelMeta, WeightShapeError, assign_state, build_model, load_weights,
                               save_weights)

AUG = {"mosaic": 0.0, "hsv_h": 0.0, "hsv_s": 0.0, "hsv_v": 0.0, "degrees": 0.0, "translate": 0.0,
       "scale": 0.0, "shear": 0.0, "fliplr": 0.0, "flipud": 0.0}


def yolo_set(root, images, labels):
    """train = the given images (name -> HxWx3 array, or raw bytes) with their label text
    (default: one box); val = one plain good image. Returns the data YAML path."""
    for split in ("train", "val"):
        for sub in ("images", "labels"):
            os.makedirs(root / sub / split, exist_ok=True)
    cv2.imwrite(str(root / "images" / "val" / "ok.png"), np.full((48, 64, 3), 120, np.uint8))
    (root / "labels" / "val" / "ok.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    for name, img in images.items():
        p = root / "images" / "train" / name
        if isinstance(img, bytes):
            p.write_bytes(img)
        else:
            cv2.imwrite(str(p), img)
        stem = os.path.splitext(name)[0]
        (root / "labels" / "train" / f"{stem}.txt").write_text(labels.get(name, "0 0.5 0.5 0.5 0.5\n"))
    y = root / "data.yaml"
    y.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames: [a, b]\n")
    return str(y)


def issues_of(spec, name):
    return [i.reason for i in spec.report.issues if os.path.basename(i.file) == name]


def test_one_pixel_image_is_skipped_with_its_reason(tmp_path):
    y = yolo_set(tmp_path, {"tiny.png": np.zeros((1, 1, 3), np.uint8),
                            "good.png": np.full((48, 64, 3), 60, np.uint8)}, {})
    spec = load_data(y, verbose=False)
    assert issues_of(spec, "tiny.png") == ["image too small (1x1); image skipped"]
    assert [os.path.basename(r.path) for r in spec.train] == ["good.png"]


def _max_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_extreme_aspect_20000x16_image_trains_without_a_memory_spike(tmp_path):
    img = np.zeros((16, 20000, 3), np.uint8)
    img[:, 2000:12000] = 255
    y = yolo_set(tmp_path, {"wide.png": img}, {"wide.png": "1 0.35 0.5 0.5 1.0\n"})
    rss = _max_rss_mb()
    spec = load_data(y, verbose=False)
    (rec,) = spec.train
    assert (rec.width, rec.height) == (20000, 16) and not issues_of(spec, "wide.png")
    np.testing.assert_allclose(rec.boxes, [[2000, 0, 12000, 16]], atol=1e-3)
    x, labels, meta = DetectionDataset(spec.train, 64, 2, augment=AUG)[0]
    assert x.shape == (3, 64, 64) and np.isfinite(x).all()
    assert labels.shape[1] == 5 and np.isfinite(labels).all()   # its 0.05 px high box: dropped or finite
    assert _max_rss_mb() - rss < 200


def test_extreme_aspect_image_letterboxes_for_eval_and_inference(tmp_path):
    from ppyolo_slim.data import letterbox
    out, ratio, pad = letterbox(np.zeros((16, 20000, 3), np.uint8), 64)
    assert out.shape == (64, 64, 3)


def _png_header_only(w, h):
    """A PNG that claims w x h pixels but holds a few bytes: what a decompression bomb looks like."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def test_20000x20000_image_is_skipped_before_any_decoding(tmp_path):
    y = yolo_set(tmp_path, {"huge.png": _png_header_only(20000, 20000),
                            "good.png": np.full((48, 64, 3), 60, np.uint8)}, {})
    rss = _max_rss_mb()
    spec = load_data(y, verbose=False)
    (reason,) = issues_of(spec, "huge.png")
    assert "decompression bomb" in reason and "image skipped" in reason
    assert [os.path.basename(r.path) for r in spec.train] == ["good.png"]
    assert _max_rss_mb() - rss < 200          # 1.2 GB had it been decoded


# ----------------------------------------------------------------------------- weights

N3 = ModelMeta(nc=3, names=["x", "y", "z"])
S3 = ModelMeta(nc=3, names=["x", "y", "z"], depth_multiple=0.33, width_multiple=0.5)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("w")
    out = {}
    for name, meta in (("n3", N3), ("s3", S3)):
        paddle.seed(3)
        out[name] = str(d / f"{name}.pdparams")
        save_weights(out[name], build_model(meta).state_dict(), meta)
    return out


def test_s_file_through_load_model_builds_an_s_model(files):
    model = ppyolo_slim.load_model(files["s3"])
    assert model.meta.width_multiple == 0.5
    assert list(model.state_dict()["model.0.conv.weight"].shape) == [32, 3, 6, 6]
    with paddle.no_grad():
        assert list(model(paddle.zeros([1, 3, 64, 64])).shape) == [1, 252, 8]


def test_s_weights_into_an_n_model_name_the_layer_and_both_shapes(files):
    state, _ = load_weights(files["s3"])
    with pytest.raises(WeightShapeError, match=r"model\.0\.conv\.weight has shape \[32, 3, 6, 6\], "
                                               r"the model expects \[16, 3, 6, 6\]"):
        assign_state(build_model(N3), state, source=files["s3"])


def test_new_head_load_is_quiet_and_keeps_the_head(recwarn):
    """Another nc (a checkpoint of other data): the body loads, the new head keeps its own
    values, and Paddle prints no "Skip loading for ..." warning per head tensor."""
    paddle.seed(1)
    src = build_model(ModelMeta(nc=5, names=list("abcde"))).state_dict()
    body = {k: v.numpy() for k, v in src.items() if not k.startswith("model.24.m.")}
    paddle.seed(2)
    model = build_model(N3)
    head = {k: v.numpy().copy() for k, v in model.state_dict().items() if k.startswith("model.24.m.")}
    loaded, skipped = assign_state(model, body, strict=False)
    assert sorted(skipped) == sorted(head) and loaded
    assert not [w for w in recwarn if "Skip loading" in str(w.message)]
    now = model.state_dict()
    assert all(np.array_equal(now[k].numpy(), v) for k, v in head.items())
    assert np.array_equal(now["model.0.conv.weight"].numpy(), body["model.0.conv.weight"])


def test_training_from_an_s_file_builds_s_whatever_model_scale_says(files, tiny_data, tmp_path):
    from ppyolo_slim.engine.trainer import Trainer
    cfg = load_config("configs/finetune.yml", tiny_train_overrides(tiny_data, tmp_path, weights=files["s3"],
                                                                   **{"model.scale": "n"}))
    t = Trainer(cfg, progress=False)
    body = load_weights(files["s3"])[0]
    own = t.core.state_dict()
    assert list(own["model.0.conv.weight"].shape) == [32, 3, 6, 6]
    np.testing.assert_array_equal(own["model.9.cv2.conv.weight"].numpy(), body["model.9.cv2.conv.weight"])
    assert "new 5-class head" in t.init_report       # the tiny set has 5 classes, the file 3
    assert list(own["model.24.m.0.weight"].shape) == [30, 128, 1, 1]


def test_training_from_weights_of_another_nc_trains_a_new_head(files, tiny_data, tmp_path):
    from ppyolo_slim.engine.trainer import train
    cfg = load_config("configs/finetune.yml",
                      tiny_train_overrides(tiny_data, tmp_path, weights=files["n3"], epochs=1))
    train(cfg, progress=False)
    state, meta = load_weights(str(tmp_path / "last.pdparams"))
    assert meta["nc"] == 5 and state["model.24.m.2.weight"].shape == (30, 256, 1, 1)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_weights_pickled_at_any_protocol_load(files, tmp_path, protocol):
    """paddle.save(protocol=2..4) and numpy's protocol-5 pickles use helpers (_codecs.encode,
    _frombuffer) the safe unpickler must admit; nothing else changes."""
    state, _ = load_weights(files["n3"])
    path = str(tmp_path / f"p{protocol}.pdparams")
    if protocol < 5:
        paddle.save({k: paddle.to_tensor(v) for k, v in state.items()}, path, protocol=protocol)
    else:
        with open(path, "wb") as f:
            pickle.dump(state, f, protocol=5)
    again, meta = load_weights(path)
    assert meta is None and again.keys() == state.keys()
    for k in state:
        np.testing.assert_array_equal(again[k], state[k])
    assert ppyolo_slim.load_model(path).nc == 3
