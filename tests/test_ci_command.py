"""CI runs the README's test command, and that command covers both dependency sets: the whole
suite on the installed one, the ``compat`` subset on the other (tools/test_other_set.py)."""
import os
import re

import pytest

from conftest import ROOT, load_tool

AREAS = ["test_train.py", "test_sparsity.py", "test_prune_collections.py", "test_distill.py", "test_quant.py",
         "test_export.py", "test_deploy_build.py", "test_infer.py"]


def _readme_test_command():
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    block = text.split("# the tests (what CI runs", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines()[1:] if line.strip() and not line.lstrip().startswith("#")]


def test_ci_runs_exactly_the_readme_command():
    readme = _readme_test_command()
    assert len(readme) == 1, readme
    ci = [line for line in open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read().splitlines()
          if line.strip() and not line.startswith(("#", "set ", "cd "))]
    assert ci == readme
    assert readme[0].endswith("&& python tools/test_other_set.py")


def test_compat_subset_covers_each_part_of_the_pipeline():
    for name in AREAS:
        text = open(os.path.join(ROOT, "tests", name), encoding="utf-8").read()
        assert re.search(r"^@pytest\.mark\.compat\n(@.*\n)*def test_", text, re.M), f"{name}: no compat test"
    toml = open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8").read()
    assert '"compat:' in toml      # a registered marker, so -m compat selects it


@pytest.mark.parametrize("here,forced,want", [("2", None, "3"), ("3", None, "2"), ("2", "2", "2"), (None, None, None)])
def test_other_set_is_the_one_not_installed(here, forced, want):
    assert load_tool("test_other_set").target_set(here, forced) == want


def test_every_install_names_the_same_paddleslim():
    """PaddleSlim goes in by its own --no-deps step on the default set (its OpenCV pin needs numpy
    1.x): the README's two commands, the other-set script and set 2's setup.py pin agree."""
    setup = open(os.path.join(ROOT, "setup.py"), encoding="utf-8").read()
    assert re.search(r'os\.environ\.get\("PPYOLO_SLIM_PADDLE", "3"\)', setup)       # 3 is the default
    default = setup.split('REQUIRES["3"] = [', 1)[1].split("]\n", 1)[0]
    assert not [r for r in re.findall(r'"([^"]+)"', default) if r.lower().startswith("paddleslim")]
    pinned = re.findall(r'"paddleslim==([\d.]+)"', setup)
    assert len(pinned) == 1                                                           # set 2's
    want = f"pip install --no-deps paddleslim=={pinned[0]}"
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    job = readme.split("# the whole job on the embedded default data", 1)[1].split("\n", 2)[1]
    assert want in job and want in _readme_test_command()[0]
    assert f"paddleslim=={pinned[0]}" in load_tool("test_other_set").NO_DEPS


def test_every_install_names_the_oneDNN_headers_the_trainer_asks_for():
    """The conv op's headers (engine/cpu_ops) come from the same --no-deps step everywhere."""
    from ppyolo_slim.engine.cpu_ops import ONEDNN_HEADERS
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    job = readme.split("# the whole job on the embedded default data", 1)[1].split("\n", 2)[1]
    for command in (job, _readme_test_command()[0]):
        assert re.search(r"pip install --no-deps [^&]*" + re.escape(ONEDNN_HEADERS), command), command
    assert ONEDNN_HEADERS in load_tool("test_other_set").NO_DEPS
