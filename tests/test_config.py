import pytest

from ppyolo_slim.config import DEFAULTS, OPTIONAL, RANGES, ConfigError, _check, load_config

CONFIGS = ["configs/base.yml", "configs/sparse.yml", "configs/finetune.yml"]


@pytest.mark.parametrize("path", CONFIGS)
def test_shipped_configs_load(path):
    cfg = load_config(path)
    assert cfg.model["scale"] == "n"


def test_base_inheritance_and_overrides():
    cfg = load_config("configs/sparse.yml", ["epochs=2", "optimizer.lr0=0.5", "data=my.yaml"])
    assert cfg.sparsity.enabled is True and cfg.sparsity.rate == 1.0 and cfg.sparsity.method == "gradual"   # sparse.yml
    assert cfg.img_size == 160                      # from base.yml
    assert cfg.epochs == 2 and cfg.optimizer.lr0 == 0.5 and cfg.data == "my.yaml"
    assert cfg.optimizer.momentum == 0.937          # untouched sibling survives the merge


def test_unknown_key_names_key_and_file(tmp_path):
    p = tmp_path / "bad.yml"
    p.write_text("_BASE_: %s\noptimizer:\n  lr_0: 0.1\n" % __import__("os").path.abspath("configs/base.yml"))
    with pytest.raises(ConfigError, match=r"bad\.yml: unknown config key 'optimizer\.lr_0'"):
        load_config(str(p))
    with pytest.raises(ConfigError, match=r"-o epoch=3: unknown config key 'epoch'; did you mean 'epochs'\?"):
        load_config(None, ["epoch=3"])


@pytest.mark.parametrize("item, meant", [("epoch=3", "epochs"), ("img-size=64", "img_size"),
                                         ("optimizer.lr_0=0.1", "optimizer.lr0"), ("lr0=0.1", "optimizer.lr0")])
def test_unknown_key_suggests_the_nearest_known_one(item, meant):
    with pytest.raises(ConfigError, match=f"did you mean '{meant}'"):
        load_config(None, [item])
    with pytest.raises(ConfigError) as e:
        load_config(None, ["zzz=1"])
    assert "did you mean" not in str(e.value)


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


@pytest.mark.parametrize("item,msg", [
    ("epochs=-3", "'epochs' must be >= 1, got -3"),
    ("epochs=0", "'epochs' must be >= 1"),
    ("img_size=100", "'img_size' must be a multiple of 32"),
    ("optimizer.lr0=.nan", "'optimizer.lr0' must be a finite number"),
    ("sparsity.rate=.inf", "'sparsity.rate' must be a finite number"),
    ("optimizer.lr0=0", "'optimizer.lr0' must be > 0"),
    ("prune.ratio=1", "'prune.ratio' must be >= 0 and < 1"),
    ("augment.mosaic=1.5", "'augment.mosaic' must be >= 0 and <= 1"),
    ("device=gpu:x", "'device' must be auto, cpu, gpu or gpu:N"),
    ("optimizer.type=sgd", "'optimizer.type' must be one of SGD, Adam, AdamW"),
    ("prune.criterion=l2", "'prune.criterion' must be one of bn_scale, bn_scale_per_flop, l1_norm, fpgm"),
    ("loss.balance=[1, 2]", "'loss.balance' must be three numbers"),
    ("model.anchors=[[10, 13], [30, -61], [116, 90]]", "'model.anchors' must be three rows"),
    ("model.anchors=[[10, 13, 16, 30], [30, 61], [116, 90]]", "same number of w,h pairs"),
])
def test_values_out_of_range_are_named(item, msg):
    with pytest.raises(ConfigError) as e:
        load_config("configs/sparse.yml", [item])
    assert str(e.value).startswith(f"-o {item}:") and msg in str(e.value), str(e.value)


def test_range_in_a_file_names_the_file(tmp_path):
    p = tmp_path / "neg.yml"
    p.write_text("epochs: 5\nschedule:\n  warmup_epochs: -1\n")
    with pytest.raises(ConfigError, match=r"neg\.yml: 'schedule\.warmup_epochs' must be >= 0, got -1"):
        load_config(str(p))


def test_every_range_names_a_known_key_and_defaults_pass():
    def leaves(d, prefix=""):
        for k, v in d.items():
            yield from leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"]
    assert set(RANGES) <= set(leaves(DEFAULTS)), set(RANGES) - set(leaves(DEFAULTS))
    _check(DEFAULTS, DEFAULTS, "defaults")   # the defaults themselves obey the rules
    for path in ("configs/full.yml", "configs/prune.yml"):
        load_config(path)
    assert set(OPTIONAL) - {"weights"} <= set(RANGES)


@pytest.mark.parametrize("path,sparse", [("configs/sparse.yml", True), ("configs/full.yml", True),
                                         ("configs/finetune.yml", False), ("configs/base.yml", False)])
def test_sparsity_is_on_exactly_in_the_sparse_training_configs(path, sparse):
    assert load_config(path)["sparsity"]["enabled"] is sparse


def test_relative_config_path_resolves_from_the_repo_root_when_not_in_the_cwd(tmp_path, monkeypatch):
    import os
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    monkeypatch.chdir(tmp_path)
    cfg = load_config("configs/sparse.yml")          # not under tmp_path: the checkout's file
    assert cfg["_source"] == os.path.join(root, "configs", "sparse.yml") and cfg.sparsity.enabled is True
    (tmp_path / "configs").mkdir()                   # one in the current folder wins
    (tmp_path / "configs" / "sparse.yml").write_text("epochs: 7\n")
    assert load_config("configs/sparse.yml")["epochs"] == 7
    with pytest.raises(ConfigError, match=r"configs/nope\.yml: config file not found \(looked in .* and in "):
        load_config("configs/nope.yml")


def test_retired_resume_key(tmp_path):
    """`resume` did nothing and is gone: as -o it is unknown; a run's saved config.yml that
    still holds it loads."""
    assert "resume" not in DEFAULTS
    with pytest.raises(ConfigError, match=r"-o resume=true: unknown config key 'resume'"):
        load_config(None, ["resume=true"])
    saved = tmp_path / "config.yml"
    saved.write_text("epochs: 3\nresume: false\n")
    cfg = load_config(str(saved))
    assert cfg["epochs"] == 3 and "resume" not in cfg
