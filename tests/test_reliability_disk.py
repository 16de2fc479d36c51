"""A full disk during a checkpoint write: one clear line naming the file, the previous
checkpoint intact, no temporary file left, and --resume works once there is room again."""
import errno
import os

import pytest

import ppyolo_slim  # noqa: F401  (import order)
from conftest import tiny_train_overrides
from ppyolo_slim.config import load_config
from ppyolo_slim.engine.checkpoint import load_checkpoint
from ppyolo_slim.engine.run import train_main
from ppyolo_slim.model import load_weights


def _cfg(tiny_data, out, epochs):
    return load_config("configs/sparse.yml",
                       tiny_train_overrides(tiny_data, out, epochs=epochs, **{"log.images": 0}))


def _fill_disk_for(monkeypatch, name):
    """os.fsync raises ENOSPC for the temporary file of ``name`` (as a full disk would on
    write or fsync); other files are written normally."""
    real = os.fsync

    def fsync(fd):
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(f".{name}."):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)
    monkeypatch.setattr(os, "fsync", fsync)


def _one_error_line(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: cannot write ") and "No space left on device" in line
    return line


@pytest.mark.parametrize("name", ["last.state", "last.pdparams"])
def test_full_disk_at_a_later_checkpoint_keeps_the_previous_one(tiny_data, tmp_path, monkeypatch,
                                                                 capsys, name):
    out = tmp_path / "run"
    assert train_main(_cfg(tiny_data, out, 1), progress=False) == 0
    before = {f: (out / f).read_bytes() for f in ("last.state", "last.pdparams")}

    _fill_disk_for(monkeypatch, name)
    assert train_main(_cfg(tiny_data, out, 2), resume="", progress=False) == 1
    line = _one_error_line(capsys)
    assert f"{out / name}:" in line
    kept = "its previous version" if name == "last.state" else f"the previous checkpoint {out / 'last.state'}"
    assert f"{kept} is intact; free space and continue with --resume" in line
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]
    # the file that failed is the previous one, byte for byte; the other is whole too
    assert (out / name).read_bytes() == before[name]
    load_weights(str(out / "last.pdparams"))
    state = load_checkpoint(str(out / "last.pdparams"))
    assert state["train"]["epoch"] == (0 if name == "last.state" else 1)

    monkeypatch.undo()      # room again: the resumed run finishes
    assert train_main(_cfg(tiny_data, out, 2), resume="", progress=False) == 0
    assert load_weights(str(out / "last.pdparams"))[1]["train"]["epoch"] == 1


def test_full_disk_at_the_first_checkpoint_says_nothing_to_resume(tiny_data, tmp_path, monkeypatch,
                                                                  capsys):
    out = tmp_path / "run"
    _fill_disk_for(monkeypatch, "best.pdparams")
    assert train_main(_cfg(tiny_data, out, 1), progress=False) == 1
    line = _one_error_line(capsys)
    assert f"{out / 'best.pdparams'}:" in line and "no earlier checkpoint" in line
    assert sorted(f for f in os.listdir(out) if not os.path.isdir(out / f)) == ["config.yml"]


def test_unwritable_output_folder_is_one_line(tiny_data, tmp_path, capsys):
    out = tmp_path / "file-not-folder"
    out.write_text("x")      # output_dir exists as a file: makedirs fails
    assert train_main(_cfg(tiny_data, out, 1), progress=False) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and str(out) in err.strip().splitlines()[-1]


def test_ctrl_c_is_one_line_that_says_what_can_be_resumed(tiny_data, tmp_path, monkeypatch, capsys):
    from ppyolo_slim.engine import trainer

    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(trainer, "train", interrupted)
    out = tmp_path / "run"
    assert train_main(_cfg(tiny_data, out, 1), progress=False) == 130
    assert capsys.readouterr().err.strip() == "interrupted; no checkpoint was written yet"
    out.mkdir()
    (out / "last.state").write_bytes(b"")
    assert train_main(_cfg(tiny_data, out, 1), progress=False) == 130
    assert capsys.readouterr().err.strip() == (f"interrupted; {out / 'last.state'} is complete: "
                                               f"continue with --resume")


@pytest.mark.parametrize("content", [b"", b"{not json", b"[1, 2]", b'{"overrides": []}'])
def test_damaged_pipeline_state_is_a_named_error(tmp_path, content):
    from ppyolo_slim.pipeline import Pipeline
    (tmp_path / "pipeline_state.json").write_bytes(content)
    with pytest.raises(ValueError, match=r"pipeline_state\.json: .*--fresh"):
        Pipeline(str(tmp_path), progress=False)
    assert Pipeline(str(tmp_path), progress=False, fresh=True).state["done"] == {}
