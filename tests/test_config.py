import pytest

from ppyolo_slim.config import ConfigError, load_config

CONFIGS = ["configs/base.yml", "configs/sparse.yml", "configs/finetune.yml"]


@pytest.mark.parametrize("path", CONFIGS)
def test_shipped_configs_load(path):
    cfg = load_config(path)
    assert cfg.model["scale"] == "n"


def test_base_inheritance_and_overrides():
    cfg = load_config("configs/sparse.yml", ["epochs=2", "optimizer.lr0=0.5", "data=my.yaml"])
    assert cfg.sparsity.enabled is True and cfg.sparsity.rate == 1e-3   # from sparse.yml
    assert cfg.img_size == 160                      # from base.yml
    assert cfg.epochs == 2 and cfg.optimizer.lr0 == 0.5 and cfg.data == "my.yaml"
    assert cfg.optimizer.momentum == 0.937          # untouched sibling survives the merge


def test_unknown_key_names_key_and_file(tmp_path):
    p = tmp_path / "bad.yml"
    p.write_text("_BASE_: %s\noptimizer:\n  lr_0: 0.1\n" % __import__("os").path.abspath("configs/base.yml"))
    with pytest.raises(ConfigError, match=r"bad\.yml: unknown config key 'optimizer\.lr_0'"):
        load_config(str(p))
    with pytest.raises(ConfigError, match=r"-o epoch=3: unknown config key 'epoch'"):
        load_config(None, ["epoch=3"])


@pytest.mark.parametrize("item,msg", [
    ("epochs=ten", "'epochs' must be int"),
    ("epochs", "expected key=value"),
    ("=3", "empty key"),
    ("optimizer=3", "must be a mapping"),
    ("epochs=[1", "not valid YAML"),
])
def test_bad_overrides_are_named(item, msg):
    with pytest.raises(ConfigError, match=msg):
        load_config(None, [item])


def test_base_cycle_and_missing_base(tmp_path):
    a, b = tmp_path / "a.yml", tmp_path / "b.yml"
    a.write_text("_BASE_: b.yml\n")
    b.write_text("_BASE_: a.yml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(str(a))
    c = tmp_path / "c.yml"
    c.write_text("_BASE_: nope.yml\n")
    with pytest.raises(ConfigError, match=r"nope\.yml: config file not found"):
        load_config(str(c))
