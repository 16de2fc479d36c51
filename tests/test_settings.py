"""Settings live with their users: each component declares its config section (settings.py),
config.py composes them; a new section or key is a few lines of the component."""
import os
import subprocess
import sys
from typing import Optional

import pytest

from ppyolo_slim import config, settings
from ppyolo_slim.config import DEFAULTS, ConfigError, load_config
from ppyolo_slim.slim.selection import PruneConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def registry(monkeypatch):
    """The section registry, put back (and the config recomposed) afterwards."""
    monkeypatch.setattr(settings, "SECTIONS", dict(settings.SECTIONS))
    yield settings
    monkeypatch.undo()
    config._compose()


def test_a_new_section_is_a_few_lines(registry):
    @settings.section("prune_log")
    class PruneLogConfig(settings.Section):
        every: int = settings.setting(10, settings.AT_LEAST_1)    # epochs between prune logs
        path: Optional[str] = settings.setting(None, kind=str)

        def check(self):
            if self.path is not None and not self.path.endswith(".json"):
                raise settings.SettingError(f"'prune_log.path' must name a .json file, got {self.path!r}")

    cfg = load_config("configs/prune.yml", ["prune_log.every=5"])
    assert PruneLogConfig.of(cfg) == PruneLogConfig(every=5)
    assert DEFAULTS["prune_log"] == {"every": 10, "path": None} and list(DEFAULTS)[-1] == "prune_log"
    with pytest.raises(ConfigError, match=r"^-o prune_log\.every=0: 'prune_log\.every' must be >= 1, got 0$"):
        load_config(None, ["prune_log.every=0"])
    with pytest.raises(ConfigError, match=r"unknown config key 'prune_log\.evry'; did you mean 'prune_log\.every'"):
        load_config(None, ["prune_log.evry=3"])
    with pytest.raises(ConfigError, match=r"^-o prune_log\.path=x\.txt: 'prune_log\.path' must name a \.json file"):
        load_config(None, ["prune_log.path=x.txt"])


def test_a_new_key_of_a_section_is_one_line(registry):
    @settings.section("prune")
    class PruneWithPatience(PruneConfig):
        patience: int = settings.setting(3, settings.AT_LEAST_1)

    cfg = load_config("configs/prune.yml", ["prune.patience=4"])
    assert PruneWithPatience.of(cfg).patience == 4 and PruneWithPatience.of(cfg).ratio == 0.875
    with pytest.raises(ConfigError, match=r"'prune\.patience' must be >= 1, got 0"):
        load_config(None, ["prune.patience=0"])


def test_the_registry_is_gone_after_the_test():
    assert "prune_log" not in DEFAULTS and "patience" not in DEFAULTS["prune"]


def test_each_component_declares_its_section():
    from ppyolo_slim.engine.evaluate import EvalConfig
    from ppyolo_slim.slim.distill_config import DistillConfig
    from ppyolo_slim.slim.quant_config import QuantConfig
    from ppyolo_slim.slim.sparsity_config import SparsityConfig
    sections = settings.load_sections()
    assert {n: sections[n] for n in ("eval", "sparsity", "distill", "prune", "quant")} == {
        "eval": EvalConfig, "sparsity": SparsityConfig, "distill": DistillConfig,
        "prune": PruneConfig, "quant": QuantConfig}
    cfg = load_config("configs/sparse.yml")
    for name, cls in sections.items():     # typed, the same settings as the dict the rest reads
        assert cls.of(cfg).to_dict() == cfg[name]
    assert SparsityConfig.of(cfg).method == "gradual" and DistillConfig().to_dict() == DEFAULTS["distill"]


def test_a_section_checks_its_values_with_the_key_the_value_and_what_it_must_be():
    with pytest.raises(settings.SettingError, match=r"^'prune\.ratio' must be >= 0 and < 1, got 1\.0$"):
        PruneConfig(ratio=1.0)
    with pytest.raises(settings.SettingError, match=r"^'prune\.ratio' must be float, got null$"):
        PruneConfig(ratio=None)
    with pytest.raises(settings.SettingError, match=r"^prune: unknown key 'rato'; known keys: compensate, "):
        PruneConfig.from_dict({"rato": 0.5})


def test_a_threshold_wins_over_the_ratio_in_one_place():
    assert PruneConfig().requested_ratio == 0.875 and PruneConfig().policy().ratio == 0.875
    cut = PruneConfig(ratio=0.5, threshold=0.01)
    assert cut.requested_ratio is None
    assert (cut.policy().ratio, cut.policy().threshold) == (None, 0.01)


def test_prune_tool_flags_are_overrides(tmp_path):
    from conftest import load_tool
    tool = load_tool("prune")
    cfg_file = tmp_path / "p.yml"
    cfg_file.write_text("prune:\n  threshold: 0.05\n  round_to: 4\n")

    def settings_of(*argv):
        args = tool.parse_args(list(argv))
        return PruneConfig.of(load_config(str(cfg_file), list(args.opt) + tool.flag_overrides(args)))
    assert settings_of().requested_ratio is None                  # the file's threshold
    assert settings_of("--ratio", "0.5").requested_ratio == 0.5   # --ratio clears it
    assert settings_of("--threshold", "1e-5").threshold == 1e-5   # read back as the float
    s = settings_of("-o", "prune.min_channels=2", "--min-channels", "3", "--no-compensate")
    assert (s.min_channels, s.compensate, s.round_to) == (3, False, 4)   # a flag wins over -o
    with pytest.raises(ConfigError, match=r"'prune\.min_channels' must be >= 1, got 0"):
        settings_of("--min-channels", "0")


def test_loading_a_config_imports_no_paddle_and_no_pruning_code():
    code = ("import sys; from ppyolo_slim.config import load_config; load_config('configs/sparse.yml'); "
            "bad = [m for m in ('paddle', 'paddleslim', 'ppyolo_slim.slim.sparsity', 'ppyolo_slim.slim.pruner') "
            "if m in sys.modules]; assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                       env={**os.environ, "PYTHONPATH": ROOT})
    assert r.returncode == 0, r.stderr[-2000:]
