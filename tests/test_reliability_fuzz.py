"""Property-based fuzzing (hypothesis, derandomized): the YOLO label parser, the COCO json reader,
the config loader with -o overrides and the weight loader. Any input gives a valid result or a
documented error naming the file / line / key; never another exception type, never a crash.

Model building from fuzzed weights (Paddle-facing code) runs in a child process, so even a
native crash would show as a failed test instead of taking pytest down.
"""
import copy
import json
import math
import os
import pickle
import subprocess
import sys

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ppyolo_slim  # noqa: F401  (import order)
from ppyolo_slim.config import DEFAULTS, ConfigError, load_config
from ppyolo_slim.data import DataError
from ppyolo_slim.data.checks import parse_yolo_labels, scan_coco
from ppyolo_slim.model import (CheckpointError, ModelMeta, UnsafeCheckpointError, build_model,
                               load_weights, save_weights)

FUZZ = settings(max_examples=100, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ----------------------------------------------------------------------------- YOLO labels

NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32).map(repr),
                    st.integers(-3, 12).map(str), st.floats(0, 1).map(lambda v: f"{v:.6f}"),
                    st.sampled_from(["nan", "inf", "-inf", "1e999", "0x10", "1_0", "--1", "", "1.5e-400",
                                     "0.0", "-0", "٣", "1,5"]))
# str.splitlines() (the parser's, as ultralytics') also breaks at these; editors and the
# "line N" numbers of the problems agree only on "\n", so the fuzz keeps to "\n"
BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
JUNK = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters=BREAKS), max_size=12)
LINE = st.one_of(st.lists(NUMBERS, min_size=5, max_size=5), st.lists(NUMBERS, min_size=0, max_size=11),
                 st.lists(st.one_of(NUMBERS, JUNK), max_size=7)).map(" ".join)


def _lines(text):
    return text.split("\n")


@FUZZ
@given(st.lists(LINE, max_size=12), st.integers(1, 6))
def test_yolo_label_parser_keeps_or_names_every_line(lines, nc):
    text = "\n".join(lines)
    classes, boxes, problems = parse_yolo_labels(text, nc)
    assert classes.dtype == np.int64 and boxes.shape == (len(classes), 4)
    assert ((classes >= 0) & (classes < nc)).all()
    assert np.isfinite(boxes).all()
    assert (boxes >= 0).all() and (boxes <= 1).all()
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    numbered = [int(p.split(":")[0].split()[1]) for p in problems]
    assert all(p.startswith(f"line {n}: ") for p, n in zip(problems, numbered))
    nonblank = {n for n, s in enumerate(_lines(text), 1) if s.strip()}
    assert set(numbered) <= nonblank
    dropped = {n for p, n in zip(problems, numbered) if p.endswith("dropped")}
    assert len(classes) + len(dropped) == len(nonblank)       # every line kept or named as dropped


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 4), st.floats(0.05, 0.95), st.floats(0.05, 0.95),
                          st.floats(0.01, 0.1), st.floats(0.01, 0.1)), max_size=8, unique=True))
def test_yolo_label_parser_reads_good_lines_exactly(rows):
    text = "\n".join(f"{c} {x:.6f} {y:.6f} {w:.6f} {h:.6f}" for c, x, y, w, h in rows)
    want = {}
    for c, x, y, w, h in rows:        # an independent reading: the written values, cx/cy/w/h -> xyxy
        x, y, w, h = (float(f"{v:.6f}") for v in (x, y, w, h))
        want.setdefault((c, round(x - w / 2, 6), round(y - h / 2, 6), round(x + w / 2, 6),
                         round(y + h / 2, 6)), (c, x - w / 2, y - h / 2, x + w / 2, y + h / 2))
    classes, boxes, problems = parse_yolo_labels(text, 5)
    dupes = [p for p in problems if "duplicate" in p]
    assert len(problems) == len(dupes) and len(classes) == len(want)
    got = np.concatenate([classes[:, None], boxes], 1)
    np.testing.assert_allclose(got, np.array(list(want.values())).reshape(-1, 5), atol=1e-12)


# ----------------------------------------------------------------------------- COCO json

FINITE = st.floats(allow_nan=True, allow_infinity=True)
SAFE_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=8)
JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | FINITE | SAFE_TEXT,
                    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(SAFE_TEXT, kids, max_size=4),
                    max_leaves=12)


def _either(good):
    """Mostly the good value, sometimes any JSON at all."""
    return st.one_of(good, good, good, JSON)


@st.composite
def coco_documents(draw):
    """Mostly COCO-shaped documents with any field replaced by anything."""
    if draw(st.integers(0, 9)) == 0:
        return draw(JSON)
    images = [{"id": draw(_either(st.integers(0, 3))), "file_name": draw(_either(st.sampled_from(
                  ["a.png", "b.jpg", "missing.jpg", "../a.png", "", "sub/"]))),
               "width": draw(_either(st.sampled_from([48, 64, 0, -1]))),
               "height": draw(_either(st.sampled_from([32, 48, 0])))} for _ in range(draw(st.integers(0, 3)))]
    anns = [{"id": draw(_either(st.integers(0, 99))), "image_id": draw(_either(st.integers(0, 3))),
             "category_id": draw(_either(st.integers(0, 3))),
             "bbox": draw(_either(st.lists(FINITE | st.integers(-5, 80), min_size=3, max_size=5))),
             "iscrowd": draw(_either(st.integers(0, 1)))} for _ in range(draw(st.integers(0, 5)))]
    cats = [{"id": draw(_either(st.integers(0, 3))), "name": draw(_either(SAFE_TEXT))}
            for _ in range(draw(st.integers(0, 3)))]
    doc = {"images": images, "annotations": anns, "categories": cats}
    for k in list(doc):
        if draw(st.integers(0, 12)) == 0:
            doc[k] = draw(JSON)
    return doc


@pytest.fixture(scope="module")
def coco_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("coco")
    cv2.imwrite(str(d / "a.png"), np.full((32, 48, 3), 90, np.uint8))
    cv2.imwrite(str(d / "b.jpg"), np.full((48, 64, 3), 90, np.uint8))
    return d


def test_coco_reader_fuzz(coco_dir):
    js = str(coco_dir / "fuzz.json")

    @FUZZ
    @given(coco_documents())
    def check(doc):
        with open(js, "w") as f:
            json.dump(doc, f)
        try:
            records, cat_ids, names, rep = scan_coco("val", js, str(coco_dir), None, "fuzz")
        except DataError as e:
            assert js in str(e)
            return
        assert len(cat_ids) == len(names) >= 1 and cat_ids == sorted(set(cat_ids))
        for r in records:
            assert r.path.startswith(str(coco_dir)) and os.path.isfile(r.path)
            assert np.isfinite(r.boxes).all() and ((r.classes >= 0) & (r.classes < len(names))).all()
            assert (r.boxes[:, 0] >= 0).all() and (r.boxes[:, 2] <= r.width).all()
            assert (r.boxes[:, 1] >= 0).all() and (r.boxes[:, 3] <= r.height).all()
            assert (r.boxes[:, 2] > r.boxes[:, 0]).all() and (r.boxes[:, 3] > r.boxes[:, 1]).all()
        assert len({r.image_id for r in records}) == len(records)
        for issue in rep.issues:
            assert issue.file == js or issue.file.startswith(str(coco_dir))
    check()


def test_coco_bytes_that_are_not_json(coco_dir):
    js = str(coco_dir / "bytes.json")

    @FUZZ
    @given(st.binary(max_size=64))
    def check(data):
        with open(js, "wb") as f:
            f.write(data)
        try:
            scan_coco("val", js, str(coco_dir), None, "fuzz")
        except DataError as e:
            assert js in str(e)
    check()


GOOD_DOC = {"images": [{"id": 1, "file_name": "a.png", "width": 48, "height": 32}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 10]}],
            "categories": [{"id": 1, "name": "x"}]}


@pytest.mark.parametrize("case", ["inf_image_id", "inf_width", "inf_category", "inf_ann_image_id",
                                  "nul_file_name", "deep_nesting"])
def test_coco_reader_names_infinity_nul_names_and_deep_nesting(tmp_path, case):
    d = copy.deepcopy(GOOD_DOC)
    if case == "inf_image_id":
        d["images"][0]["id"] = math.inf
    elif case == "inf_width":
        d["images"][0]["width"] = math.inf
    elif case == "inf_category":
        d["categories"][0]["id"] = math.inf
    elif case == "inf_ann_image_id":
        d["annotations"][0]["image_id"] = math.inf
    elif case == "nul_file_name":
        d["images"][0]["file_name"] = "a\x00.png"
    js = tmp_path / "bad.json"
    js.write_text("[" * 50000 + "]" * 50000 if case == "deep_nesting" else json.dumps(d))
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((32, 48, 3), np.uint8))
    try:       # fixed: the entry dropped with an issue, or a DataError naming the file
        scan_coco("val", str(js), str(tmp_path), None, "fuzz")
    except DataError as e:
        assert "bad.json" in str(e)


# ----------------------------------------------------------------------------- config -o

def _leaves(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _leaves(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


LEAVES = dict(_leaves(DEFAULTS))
SECTIONS = [k for k, v in DEFAULTS.items() if isinstance(v, dict)]
# what a key whose default is None (unset) may hold when set, written out here independently
NULLABLE = {"model.depth_multiple": (int, float), "model.width_multiple": (int, float),
            "model.anchors": list, "weights": str, "prune.threshold": (int, float),
            "sparsity.bottleneck_rate": (int, float)}
NULLABLE_KEYS = st.sampled_from(sorted(NULLABLE))
KEYS = st.one_of(st.sampled_from(sorted(LEAVES)), NULLABLE_KEYS, NULLABLE_KEYS, st.sampled_from(SECTIONS),
                 st.sampled_from(sorted(LEAVES)).map(lambda k: k + ".x"),
                 st.sampled_from(["_BASE_", "", ".", "a..b", "model.", "unknown", " epochs "]),
                 st.text(max_size=10))
VALUES = st.one_of(st.sampled_from(["1", "-3", "0.5", ".nan", ".inf", "true", "no", "null", "~", "",
                                    "[1, 2]", "[a, b]", "[[1, 2], [3, 4], [5, 6]]", "{a: 1}", "{",
                                    "!!python/object/apply:os.system [ls]", "2001-01-01", "'5'",
                                    "&a [*a]", "0x1F", "1e3", "abc", "a: b: c"]),
                   st.text(max_size=16))


def _finite(v):
    if isinstance(v, list):
        return all(_finite(x) for x in v)
    return not isinstance(v, float) or math.isfinite(v)


def _value_ok(path, v):
    if not _finite(v):
        return False
    d = LEAVES[path]
    if d is None:
        return v is None or (isinstance(v, NULLABLE[path]) and not isinstance(v, bool))
    if isinstance(d, bool):
        return isinstance(v, bool)
    if isinstance(d, float):
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if isinstance(d, int):
        return isinstance(v, int) and not isinstance(v, bool)
    if isinstance(d, list):
        return isinstance(v, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
    return isinstance(v, type(d))


@FUZZ
@given(st.lists(st.tuples(KEYS, VALUES), min_size=1, max_size=2), st.sampled_from(["configs/sparse.yml", None]))
def test_config_overrides_give_typed_config_or_named_error(pairs, path):
    items = [f"{k}={v}" for k, v in pairs]
    try:
        cfg = load_config(os.path.join(ROOT, path) if path else None, items)
    except ConfigError as e:
        assert any(str(e).startswith(f"-o {i}:") for i in items), str(e)
        return
    got = dict(_leaves({k: v for k, v in cfg.items() if not k.startswith("_")}))
    assert set(got) == set(LEAVES)
    for k, v in got.items():
        assert _value_ok(k, v), (k, v)


# ----------------------------------------------------------------------------- weights

NAMED = (CheckpointError, UnsafeCheckpointError)


@pytest.fixture(scope="module")
def real_file(tmp_path_factory):
    meta = ModelMeta(nc=2, names=["a", "b"])
    path = str(tmp_path_factory.mktemp("w") / "real.pdparams")
    save_weights(path, build_model(meta).state_dict(), meta)
    return path


def _check_load(path):
    try:
        state, meta = load_weights(path)
    except NAMED as e:
        assert path in str(e)
        return None
    assert state and all(isinstance(k, str) and isinstance(v, np.ndarray) and v.dtype.kind in "fiub"
                         for k, v in state.items())
    assert meta is None or isinstance(meta, dict)
    return state


def test_weight_loader_random_bytes(tmp_path):
    path = str(tmp_path / "random.pdparams")

    @FUZZ
    @given(st.one_of(st.binary(max_size=200), st.binary(max_size=60).map(lambda b: b"\x80\x04" + b),
                     st.binary(max_size=60).map(lambda b: b"\x80\x02" + b)))
    def check(data):
        with open(path, "wb") as f:
            f.write(data)
        _check_load(path)
    check()


ARRAYS = st.builds(lambda shape, dtype: np.zeros(shape, dtype),
                   st.lists(st.integers(0, 3), max_size=3).map(tuple),
                   st.sampled_from(["float32", "float64", "float16", "int64", "uint8", "bool", "complex64",
                                    "U2", "S3", "O", "V4"]))
LEAF = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5),
                 st.binary(max_size=5), ARRAYS, st.sampled_from([complex(1, 2), {1, 2}, frozenset([3]),
                                                                 bytearray(b"x"), slice(1, 2), range(3)]))
TREES = st.recursive(LEAF, lambda kids: st.lists(kids, max_size=3) | st.tuples(kids, kids)
                     | st.dictionaries(st.one_of(st.text(max_size=6), st.integers()), kids, max_size=3),
                     max_leaves=10)


def test_weight_loader_random_pickles(tmp_path):
    path = str(tmp_path / "pickled.pdparams")
    meta_key = "__ppyolo_slim_meta__"

    @FUZZ
    @given(st.one_of(TREES, st.dictionaries(st.text(max_size=6), TREES, max_size=4),
                     st.dictionaries(st.sampled_from(["model.0.conv.weight", "model.0.bn.weight", "x"]),
                                     ARRAYS, min_size=1, max_size=3)),
           st.one_of(st.none(), st.none(), JSON.map(json.dumps), TREES,
                     st.dictionaries(st.sampled_from(["nc", "names", "anchors", "img_size"]), JSON,
                                     max_size=2).map(json.dumps)),
           st.sampled_from([2, 4, 5]))
    def check(obj, meta, protocol):
        if isinstance(obj, dict) and meta is not None:
            obj[meta_key] = meta
        with open(path, "wb") as f:
            f.write(pickle.dumps(obj, protocol=protocol))
        _check_load(path)
    check()


def test_weight_loader_truncations_and_bit_flips(real_file, tmp_path):
    data = open(real_file, "rb").read()
    path = str(tmp_path / "damaged.pdparams")

    @FUZZ
    @given(st.integers(0, len(data) - 1), st.lists(st.tuples(st.integers(0, len(data) - 1),
                                                             st.integers(1, 255)), max_size=3))
    def check(cut, flips):
        b = bytearray(data)
        for pos, x in flips:
            b[pos] ^= x
        if not flips:
            b = b[:cut]
        with open(path, "wb") as f:
            f.write(bytes(b))
        state = _check_load(path)
        if not flips:
            assert state is None, "a truncated file must not load"
    check()


def test_building_models_from_damaged_weights_never_crashes(real_file, tmp_path):
    """The Paddle-facing part (channels from shapes, layer construction, a forward pass) in a
    child process: it exits 0 only if every damaged file built a working model or raised a
    documented error naming the file."""
    child = os.path.join(ROOT, "tests", "reliability_fuzz_child.py")
    r = subprocess.run([sys.executable, child, real_file, str(tmp_path)], cwd=ROOT, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    assert "examples ok" in r.stdout
