"""Checkpoints: round trip, named shape errors, and no code run on load."""
import os
import pickle

import numpy as np
import pytest

import ppyolo_slim
import paddle

from ppyolo_slim.model import (CheckpointError, ModelMeta, UnsafeCheckpointError, WeightShapeError,
                               build_model, load_weights, save_weights)

META = ModelMeta(nc=3, names=["cat", "dog", "cow"], img_size=320, made_by={"stage": "test"})


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = build_model(META)
    path = str(tmp_path_factory.mktemp("w") / "m.pdparams")
    save_weights(path, model.state_dict(), META)
    return model, path


def test_round_trip_keeps_outputs_and_metadata(saved):
    model, path = saved
    loaded = ppyolo_slim.load_model(path)
    assert not loaded.training
    assert loaded.meta.names == META.names and loaded.meta.img_size == 320
    assert loaded.meta.made_by["stage"] == "test" and "time" in loaded.meta.made_by
    model.eval()
    x = paddle.rand([1, 3, 64, 64])
    np.testing.assert_array_equal(model(x).numpy(), loaded(x).numpy())


def test_file_is_readable_by_paddle_load(saved):
    _, path = saved
    state = paddle.load(path)
    assert tuple(state["model.0.conv.weight"].shape) == (16, 3, 6, 6)


def test_plain_paddle_save_state_dict_loads_and_infers_nc(saved, tmp_path):
    model, _ = saved
    path = str(tmp_path / "plain.pdparams")
    paddle.save(model.state_dict(), path)
    loaded = ppyolo_slim.load_model(path)
    assert loaded.nc == 3


def _tamper(path, tmp_path, fn):
    state, meta = load_weights(path)
    fn(state)
    out = str(tmp_path / "bad.pdparams")
    save_weights(out, state, ModelMeta.from_dict(meta))
    return out


def test_wrong_shape_names_the_layer_and_both_shapes(saved, tmp_path):
    _, path = saved

    def narrow(state):
        state["model.13.cv3.bn.weight"] = state["model.13.cv3.bn.weight"][:10]
    bad = _tamper(path, tmp_path, narrow)
    with pytest.raises(WeightShapeError) as e:
        ppyolo_slim.load_model(bad)
    msg = str(e.value)
    assert "model.13.cv3.bn.weight" in msg and "[10]" in msg and "[128]" in msg and bad in msg


def test_conv_fed_the_wrong_width_is_named(saved, tmp_path):
    _, path = saved

    def widen(state):
        w = state["model.1.conv.weight"]
        state["model.1.conv.weight"] = np.concatenate([w, w[:, :2]], axis=1)
    bad = _tamper(path, tmp_path, widen)
    with pytest.raises(WeightShapeError, match=r"model\.1\.conv\.weight: expects 18 input channels .* gives 16"):
        ppyolo_slim.load_model(bad)


def test_checkpoint_of_another_nc_says_so(saved, tmp_path):
    _, path = saved
    state, _ = load_weights(path)
    bad = str(tmp_path / "nc.pdparams")
    save_weights(bad, state, ModelMeta(nc=5, names=list("abcde")))
    with pytest.raises(WeightShapeError, match="weights are for nc=3, the model has nc=5"):
        ppyolo_slim.load_model(bad)


def test_missing_and_unexpected_parameters(saved, tmp_path):
    _, path = saved
    bad = _tamper(path, tmp_path, lambda s: s.pop("model.5.bn._mean"))
    with pytest.raises(WeightShapeError, match=r"model\.5\.bn\._mean is missing"):
        ppyolo_slim.load_model(bad)
    bad = _tamper(path, tmp_path, lambda s: s.update({"model.99.conv.weight": np.zeros(3, "float32")}))
    with pytest.raises(WeightShapeError, match=r"unexpected parameter model\.99\.conv\.weight"):
        ppyolo_slim.load_model(bad)


def test_nan_weights_are_refused(saved, tmp_path):
    _, path = saved

    def poison(state):
        state["model.2.cv1.conv.weight"][0, 0, 0, 0] = np.nan
    with pytest.raises(CheckpointError, match=r"model\.2\.cv1\.conv\.weight holds NaN"):
        ppyolo_slim.load_model(_tamper(path, tmp_path, poison))


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_with_code_payload_is_refused_without_running(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pdparams"
    path.write_bytes(pickle.dumps({"model.0.conv.weight": _Payload(marker)}, protocol=4))
    with pytest.raises(UnsafeCheckpointError, match="refused to load"):
        ppyolo_slim.load_model(str(path))
    assert not marker.exists()
    # the same payload via plain pickle would have run: the test can fail
    pickle.loads(path.read_bytes())
    assert marker.exists()


def _tool_main(name):
    from conftest import load_tool
    if name != "trt_build":
        return load_tool(name).main
    from ppyolo_slim.deploy import trt_build
    return trt_build.main


@pytest.mark.parametrize("tool", ["infer", "eval", "export", "prune", "trt_build"])
def test_refused_pickle_is_one_line_in_every_tool(tool, tmp_path, capsys):
    """A refused pickle is a CheckpointError (still an UnpicklingError), so each tool that takes
    weights says so in one line instead of a traceback."""
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pdparams"
    evil.write_bytes(pickle.dumps({"model.0.conv.weight": _Payload(marker)}, protocol=4))
    with pytest.raises(CheckpointError) as e:
        load_weights(str(evil))
    assert isinstance(e.value, UnsafeCheckpointError) and isinstance(e.value, pickle.UnpicklingError)
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(b"never read")
    args = {"infer": ["--source", str(tmp_path / "img"), "--output", str(tmp_path / "out")],
            "eval": [], "export": ["--output", str(tmp_path / "out")],
            "prune": ["--output", str(tmp_path / "out")], "trt_build": ["--check"]}[tool]
    rc = _tool_main(tool)(["--weights", str(evil)] + args)
    err = capsys.readouterr().err.strip()
    assert rc != 0 and len(err.splitlines()) == 1, err
    assert err.startswith("error: ") and "evil.pdparams" in err and "refused to load" in err
    assert not marker.exists()


def test_torch_zip_given_as_pdparams_says_to_convert_it(tmp_path, capsys):
    import zipfile
    pt = tmp_path / "yolov5n.pdparams"          # an ultralytics .pt renamed: torch.save writes a zip
    with zipfile.ZipFile(pt, "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    with pytest.raises(CheckpointError, match=r"a zip archive \(a PyTorch / ultralytics \.pt checkpoint\?\).*"
                       r"python tools/convert_weights\.py --src .*yolov5n\.pdparams --dst OUT\.pdparams"):
        ppyolo_slim.load_model(str(pt))
    from conftest import load_tool
    assert load_tool("export").main(["--weights", str(pt), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "convert_weights.py" in err


@pytest.mark.parametrize("content", [b"", b"\x80\x04garbage", b"not a pickle at all"])
def test_truncated_or_garbage_file_is_a_named_error(tmp_path, content, saved):
    path = tmp_path / "broken.pdparams"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="broken.pdparams"):
        ppyolo_slim.load_model(str(path))
    # a real checkpoint cut in half
    _, good = saved
    half = tmp_path / "half.pdparams"
    data = open(good, "rb").read()
    half.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="half.pdparams"):
        load_weights(str(half))


def test_save_is_atomic_and_keeps_old_file_on_failure(saved, tmp_path, monkeypatch):
    model, path = saved
    out = tmp_path / "ckpt.pdparams"
    save_weights(str(out), model.state_dict(), META)
    before = out.read_bytes()

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        save_weights(str(out), model.state_dict(), META)
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pdparams"]   # no temp file left


def test_stale_temps_of_killed_writers_are_removed_and_nothing_else(tmp_path):
    import subprocess
    import sys
    from ppyolo_slim.utils.io import remove_stale_temps
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()                                   # a pid that ran and is gone
    keep = {"last.pdparams": b"final", ".hidden.yml": b"not a temp",
            f".last.state.{os.getpid()}.ab_12cd.tmp": b"a live writer's",
            ".best.pdparams.x.ab12.tmp": b"no pid: not our pattern"}
    stale = {f".last.state.{dead.pid}.k3j_9x.tmp": b"half written", f"sub/.best.pdparams.{dead.pid}.q1.tmp": b"x"}
    for name, data in {**keep, **stale}.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(data)
    export_dir = tmp_path / f".onnx.export-{dead.pid}-a1b2c3"
    export_dir.mkdir()
    (export_dir / "model.onnx").write_bytes(b"partial")
    live_export = tmp_path / f".onnx.export-{os.getpid()}-zz"
    live_export.mkdir()

    assert remove_stale_temps(str(tmp_path / "missing")) == []
    top = remove_stale_temps(str(tmp_path))      # not recursive: sub/ is left
    assert sorted(os.path.basename(p) for p in top) == sorted([f".last.state.{dead.pid}.k3j_9x.tmp",
                                                              export_dir.name])
    assert (tmp_path / "sub" / f".best.pdparams.{dead.pid}.q1.tmp").exists()
    assert [os.path.basename(p) for p in remove_stale_temps(str(tmp_path), recursive=True)] == [
        f".best.pdparams.{dead.pid}.q1.tmp"]
    for name, data in keep.items():
        assert (tmp_path / name).read_bytes() == data
    assert live_export.is_dir() and not export_dir.exists()


def test_temp_name_carries_the_writer_pid(tmp_path, monkeypatch):
    seen = []
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (seen.append(os.path.basename(a)), real(a, b)))
    from ppyolo_slim.utils.io import _TEMP_NAME, atomic_write_bytes
    atomic_write_bytes(str(tmp_path / "x.json"), b"{}")
    m = _TEMP_NAME.match(seen[0])
    assert m and int(m.group(1)) == os.getpid(), seen


def _wrong_file(kind, tmp_path, saved):
    import cv2
    if kind == "onnx":
        p = tmp_path / "model.onnx"
        p.write_bytes(b"\x08\x07\x12\x0bpaddle2onnx\x1a\x05" + bytes(200))   # an ONNX ModelProto's opening
    elif kind == "jpg":
        p = tmp_path / "photo.jpg"
        cv2.imwrite(str(p), np.full((8, 8, 3), 90, np.uint8))
    elif kind == "pdiparams":
        p = tmp_path / "export" / "model.pdiparams"
        p.parent.mkdir()
        p.write_bytes(b"\x00\x00\x00\x00" + bytes(range(256)))
    else:                                    # the training state beside last.pdparams
        from ppyolo_slim.engine.checkpoint import save_checkpoint
        model, meta = saved[0], META
        save_checkpoint(str(tmp_path / "last.pdparams"), model, None, None, meta, {"epoch": 0})
        p = tmp_path / "last.state"
    return str(p)


@pytest.mark.parametrize("kind, says", [
    ("onnx", r"an ONNX model, not \.pdparams weights: run it with --onnx .*model\.onnx"),
    ("jpg", r"an image, not a model: images go to --source"),
    ("pdiparams", r"Paddle inference model .* --model-dir .*export"),
    ("state", r"a training state .* use .*last\.pdparams as --weights, or continue the run with "
              r"python tools/train\.py --resume .*last\.pdparams"),
])
def test_wrong_kind_of_file_as_weights_says_what_it_is_and_what_to_use(kind, says, tmp_path, saved, capsys):
    path = _wrong_file(kind, tmp_path, saved)
    with pytest.raises(CheckpointError, match=says):
        load_weights(path)
    from conftest import load_tool
    import cv2
    import re
    (tmp_path / "img").mkdir()
    cv2.imwrite(str(tmp_path / "img" / "a.png"), np.zeros((8, 8, 3), np.uint8))
    rc = load_tool("infer").main(["--weights", path, "--source", str(tmp_path / "img"),
                                  "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert re.search(says, err), err


def test_folder_as_weights_points_to_model_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="a folder, not a weights file.*--model-dir"):
        load_weights(str(tmp_path))
