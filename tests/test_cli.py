"""One exit-code convention across the tools (ppyolo_slim/cli.py): 2 for a command that cannot
run as given, before any slow work; 1 for work that started and failed."""
import pytest

from conftest import load_tool
from ppyolo_slim import cli


@pytest.mark.parametrize("tool", ["train", "prune", "eval", "pipeline"])
def test_unknown_config_key_is_a_usage_error_in_every_tool(tool, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    extra = {"eval": ["--weights", "w.pdparams"]}.get(tool, [])
    assert load_tool(tool).main(extra + ["-o", "epoch=3"]) == cli.USAGE
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "did you mean 'epochs'?" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("tool", ["train", "prune", "eval", "infer", "export"])
def test_missing_weights_is_a_usage_error_in_every_tool(tool, tmp_path, capsys):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(b"never read")
    extra = {"infer": ["--source", str(tmp_path / "img"), "--output", str(tmp_path / "o")],
             "export": ["--output", str(tmp_path / "o")], "prune": ["--output", str(tmp_path / "o")],
             "train": ["-o", f"output_dir={tmp_path / 'run'}"]}.get(tool, [])
    assert load_tool(tool).main(["--weights", str(tmp_path / "missing.pdparams")] + extra) == cli.USAGE
    err = capsys.readouterr().err.strip()
    assert "missing.pdparams: no such" in err and "Traceback" not in err and len(err.splitlines()) == 1
