"""Child process of tests/test_reliability_fuzz.py: damaged weights into the Paddle-facing loader.

    python tests/reliability_fuzz_child.py REAL.pdparams WORKDIR

Each example damages a real checkpoint's arrays or metadata (drop, cut, pad, reshape, retype,
NaN, extra or swapped keys, junk metadata fields), saves it, and calls ``ppyolo_slim.load_model``
(and the TensorRT builder's reader): either the model builds and runs, or the error is a
documented type naming the file. Exit 0
and "N examples ok" on stdout when all pass; a hypothesis failure report and exit 1 otherwise.
"""
import json
import os
import pickle
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import ppyolo_slim  # noqa: E402  (import order: before paddle)
import numpy as np  # noqa: E402
import paddle  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from ppyolo_slim.model import (CheckpointError, UnsafeCheckpointError, WeightShapeError,  # noqa: E402
                               load_weights)
from ppyolo_slim.model.weights import META_KEY  # noqa: E402
from ppyolo_slim.deploy.builder import load_checkpoint as builder_load  # noqa: E402

DOCUMENTED = (CheckpointError, WeightShapeError, UnsafeCheckpointError)
JUNK = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**12), st.floats(), st.text(max_size=4),
                 st.lists(st.one_of(st.integers(-3, 400), st.floats(), st.text(max_size=2)), max_size=4),
                 st.lists(st.lists(st.integers(-3, 400), max_size=7), max_size=4),
                 st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
META_FIELDS = ["nc", "names", "depth_multiple", "width_multiple", "anchors", "img_size", "made_by", "version"]


def damage(draw, state, meta):
    keys = sorted(state)
    kind = draw(st.sampled_from(["drop", "cut", "pad", "reshape", "retype", "nan", "extra", "swap",
                                 "meta_field", "meta_field", "meta_field", "meta_field", "meta_gone",
                                 "meta_junk", "nc"]))
    k = draw(st.sampled_from(keys))
    v = state[k]
    if kind == "drop":
        del state[k]
    elif kind in ("cut", "pad") and v.ndim:
        ax = draw(st.integers(0, v.ndim - 1))
        n = draw(st.integers(0, v.shape[ax] - 1)) if kind == "cut" else v.shape[ax] + draw(st.integers(1, 9))
        idx = np.arange(n) % v.shape[ax]
        state[k] = np.take(v, idx, axis=ax)
    elif kind == "reshape":
        state[k] = v.reshape(-1) if v.ndim != 1 else v.reshape(1, -1)
    elif kind == "retype":
        state[k] = v.astype(draw(st.sampled_from(["float16", "float64", "int32", "uint8", "bool"])))
    elif kind == "nan":
        w = v.astype(np.float32).copy()
        w.reshape(-1)[0] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        state[k] = w
    elif kind == "extra":
        state[draw(st.sampled_from(["model.99.conv.weight", "model.0.conv.bias", "foo", k + "x"]))] = v
    elif kind == "swap":
        k2 = draw(st.sampled_from(keys))
        state[k], state[k2] = state[k2], state[k]
    elif kind in ("meta_field", "nc") and not isinstance(meta, dict):
        pass
    elif kind == "meta_field":
        meta[draw(st.sampled_from(META_FIELDS))] = draw(JUNK)
    elif kind == "meta_gone":
        meta = None
    elif kind == "meta_junk":
        meta = draw(JUNK)
    elif kind == "nc":
        meta["nc"] = draw(st.integers(1, 90))
        meta["names"] = [f"c{i}" for i in range(meta["nc"])]
    return state, meta


def main(real, work):
    state0, meta0 = load_weights(real)
    path = os.path.join(work, "damaged.pdparams")
    count = [0]
    x = paddle.rand([1, 3, 64, 64])

    @settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "40")), deadline=None, derandomize=True,
              database=None, suppress_health_check=list(HealthCheck))
    @given(st.data())
    def check(data):
        state, meta = dict(state0), json.loads(json.dumps(meta0))
        for _ in range(data.draw(st.integers(1, 2))):
            state, meta = damage(data.draw, state, meta)
        obj = dict(state)
        if meta is not None:
            obj[META_KEY] = json.dumps(meta)
        with open(path, "wb") as f:
            f.write(pickle.dumps(obj, protocol=4))
        try:        # the TensorRT builder's reader (NumPy only) must agree on what is readable
            builder_load(path)
            readable = True
        except DOCUMENTED as e:
            assert path in str(e), str(e)
            readable = False
        try:
            model = ppyolo_slim.load_model(path)
        except DOCUMENTED as e:
            assert path in str(e), str(e)
            assert not readable or isinstance(e, WeightShapeError), "the builder read what load_model refused"
        else:
            assert readable, "load_model read what the builder refused"
            with paddle.no_grad():
                y = model(x)
            assert list(y.shape) == [1, 252, 5 + model.meta.nc] and bool(paddle.isfinite(y).all())
        count[0] += 1

    check()
    print(f"{count[0]} examples ok")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
