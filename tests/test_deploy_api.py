"""Every TensorRT call deploy/ makes, checked against the real API (tensorrt-stubs' .pyi text).

Two nets: (1) the builder runs on the NumPy stand-in, which records each call (method,
positional count, keyword names) and each layer/tensor attribute set; (2) a static scan
of the deploy/ files that talk to TensorRT finds calls and attribute uses on the
conventional names of TensorRT objects (network, builder, config, profile, engine,
context, runtime, registry, creator, logger, trt) and every ``trt.X.Y`` enum use.
Both are checked against the stubs: unknown method or attribute, unknown keyword,
wrong positional count or missing argument fails.

The stubs are not installed by ``pip install -e .[test]``: CI installs them with
``pip install --no-deps tensorrt-stubs==10.13.0.35.1``; without them this test FAILS
with that hint (it must not silently skip).
"""
import ast
import inspect
import os

import numpy as np
import pytest

import ppyolo_slim  # noqa: F401  (import order)
from ppyolo_slim.deploy import builder as B
from ppyolo_slim.deploy import numpy_net
from ppyolo_slim.deploy.trt_stubs import INSTALL, StubsMissing, load_api, parse_pyi

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY = os.path.join(ROOT, "ppyolo_slim", "deploy")
# files whose code talks to real TensorRT (trt_infer/trt_build only go through these)
TRT_FILES = ["builder.py", "engine.py", "trt_runtime.py", "calibrator.py", "trt_compat.py", "gpu_check.py"]
# the naming convention those files keep for TensorRT objects
VAR_CLASS = {"network": "INetworkDefinition", "builder": "Builder", "config": "IBuilderConfig",
             "profile": "IOptimizationProfile", "engine": "ICudaEngine", "context": "IExecutionContext",
             "runtime": "Runtime", "registry": "IPluginRegistry", "creator": "IPluginCreator",
             "creator_v3": "IPluginCreatorV3One", "logger": "Logger", "serialized": "IHostMemory",
             "parser": "OnnxParser"}


@pytest.fixture(scope="module")
def api():
    try:
        return load_api()
    except StubsMissing as e:
        pytest.fail(f"{e}\n(CI installs them; locally run: {INSTALL})")


@pytest.fixture(scope="module")
def recorded(ptq_dir):
    """The API log of builds covering every code path of the builder (INT8: explicit Q/DQ with the
    scales of a tools/quant.py folder)."""
    from ppyolo_slim.deploy.qdq_scales import load_qdq_scales
    from ppyolo_slim.model import ModelMeta, build_model
    scales = load_qdq_scales(ptq_dir)
    meta = ModelMeta(nc=2, names=["a", "b"])
    import paddle
    paddle.seed(0)
    state = {k: v.numpy() for k, v in build_model(meta).state_dict().items()}
    numpy_net.clear_api_log()
    variants = [B.BuildOptions(img_size=64), B.BuildOptions(img_size=64, bn_as_scale=True),
                B.BuildOptions(img_size=64, dynamic_batch=True, nms=B.NMSOptions()),
                B.BuildOptions(img_size=64, fp16_graph=True, nms=B.NMSOptions(class_agnostic=True))]
    for o in variants:
        flags = (1 << numpy_net.NetworkDefinitionCreationFlag.STRONGLY_TYPED.value) if o.fp16_graph else 0
        B.build_network(numpy_net.create_network(flags), numpy_net, state, meta, o)
    q_state, q_meta = B.load_checkpoint(scales.weights)
    B.build_network(numpy_net.create_network(1 << numpy_net.NetworkDefinitionCreationFlag.STRONGLY_TYPED.value),
                    numpy_net, q_state, q_meta, B.BuildOptions(img_size=64, int8=scales))
    log = list(numpy_net.API_LOG)
    numpy_net.clear_api_log()
    return log


def test_stub_reader_sees_the_known_api(api):
    """The reader itself: known methods, argument names, properties, members, the broken lines."""
    assert api.version.startswith("10.")
    assert api.check_call("INetworkDefinition", "add_convolution_nd", 5, []) is None
    assert "kernel_shape" in api.check_call("INetworkDefinition", "add_convolution_nd", 2, ["kernel"])
    assert "no parameter named 'weights'" in api.check_call("INetworkDefinition", "add_convolution_nd", 3,
                                                             ["weights", "kernel"])
    assert "at most 1" in api.check_call("INetworkDefinition", "add_resize", 2, [])
    assert "no such method" in api.check_call("INetworkDefinition", "add_silu", 1, [])
    # the unparseable-as-Python lines still read: add_scale_nd's default-before-required
    assert api.check_call("INetworkDefinition", "add_scale_nd", 2, ["channel_axis"]) is None
    assert api.can_set("IShuffleLayer", "reshape_dims") and not api.has_attr("IShuffleLayer", "reshape")
    assert api.has_attr("IConvolutionLayer", "get_output")          # inherited from ILayer
    assert {"SIGMOID", "RELU"} <= api.cls("ActivationType").members


def test_parser_on_a_synthetic_stub():
    text = '''
class A(B):
    """doc with code: def fake(x): ..."""
    X: typing.ClassVar[A]  # value = <A.X: 0>
    size: int
    @typing.overload
    def f(self, a: int, in: list[int] = None, c: int) -> None:
        ...
    @typing.overload
    def f(self, a: str) -> None:
        ...
    @property
    def ro(self) -> int:
        ...
class B:
    def g(self, *args, **kwargs):
        ...
def top(x, y=1):
    ...
'''
    classes, funcs, names = parse_pyi(text)
    a = classes["A"]
    assert a.members == {"X"} and a.attrs == {"size", "ro"} and "size" in a.settable and "ro" not in a.settable
    assert "fake" not in a.methods and len(a.methods["f"]) == 2
    assert [p.name for p in a.methods["f"][0].params] == ["a", "in", "c"]
    assert a.methods["f"][0].bind_error(1, ["c"]) is None
    assert a.methods["f"][0].bind_error(1, []) is not None        # c is required
    assert classes["B"].methods["g"][0].bind_error(5, ["anything"]) is None
    assert funcs["top"][0].bind_error(1, ["y"]) is None and "top" in names


def _check_entry(api, owner, name, n_pos, kws):
    if owner == "<module>":
        return api.check_call(None, name, n_pos, kws)
    if n_pos == -1:        # attribute set
        if not api.has_attr(owner, name):
            return f"{owner}.{name}: no such attribute"
        if not api.can_set(owner, name):
            return f"{owner}.{name}: read-only in TensorRT"
        return None
    return api.check_call(owner, "__init__" if name == "__init__" else name, n_pos, kws)


@pytest.mark.compat
def test_every_recorded_builder_call_exists_in_tensorrt(api, recorded):
    used = sorted(set(recorded))
    assert any(n == "add_convolution_nd" for _, n, _, _ in used)
    assert any(n == "add_plugin_v2" for _, n, _, _ in used) and any(n == "add_scale" for _, n, _, _ in used)
    assert any(o == "IResizeLayer" and n == "scales" for o, n, _, _ in used)
    assert {("INetworkDefinition", "add_quantize"), ("INetworkDefinition", "add_dequantize"), ("IQuantizeLayer", "axis"),
            ("IConvolutionLayer", "set_input")} <= {(o, n) for o, n, _, _ in used}
    errors = [e for e in (_check_entry(api, *u) for u in used) if e]
    assert not errors, "TensorRT calls that the real API does not accept:\n" + "\n".join(errors)


def test_standin_methods_mirror_tensorrt_signatures(api):
    """The stand-in's add_* take TensorRT's parameter names in TensorRT's order (so a builder
    call that works on the stand-in binds the same way on TensorRT)."""
    errors = []
    for name, fn in inspect.getmembers(numpy_net.NumpyNetwork, inspect.isfunction):
        if name.startswith("_") or name == "run":
            continue
        mine = [p for p in inspect.signature(fn).parameters][1:]
        sigs = api.signatures("INetworkDefinition", name)
        if not sigs:
            errors.append(f"NumpyNetwork.{name}: not a TensorRT INetworkDefinition method")
        elif not any([p.name for p in s.params] == mine for s in sigs):
            errors.append(f"NumpyNetwork.{name}{tuple(mine)} vs TensorRT {[s.text for s in sigs]}")
    assert not errors, "\n".join(errors)


def _scan(path):
    """(what, owner, name, n_pos, keywords, line) for TensorRT uses in one file."""
    tree = ast.parse(open(path).read(), path)
    found = []

    def var_of(node):
        if isinstance(node, ast.Name):
            return node.id
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
            return node.attr          # self.network, self.context, ...
        return None

    calls = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            calls.add(id(node.func))
            v = var_of(node.func.value)
            n_pos = len(node.args)
            kws = tuple(k.arg for k in node.keywords if k.arg)
            if v in VAR_CLASS:
                found.append(("call", VAR_CLASS[v], node.func.attr, n_pos, kws, node.lineno))
            elif v == "trt":
                found.append(("trtcall", None, node.func.attr, n_pos, kws, node.lineno))
            elif isinstance(node.func.value, ast.Attribute) and var_of(node.func.value.value) == "trt":
                found.append(("call", node.func.value.attr, node.func.attr, n_pos, kws, node.lineno))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and id(node) not in calls:
            v = var_of(node.value)
            store = isinstance(node.ctx, ast.Store)
            if v in VAR_CLASS:
                found.append(("set" if store else "get", VAR_CLASS[v], node.attr, 0, (), node.lineno))
            elif v == "trt":
                found.append(("module", None, node.attr, 0, (), node.lineno))
            elif isinstance(node.value, ast.Attribute) and var_of(node.value.value) == "trt":
                found.append(("get", node.value.attr, node.attr, 0, (), node.lineno))
    return found


def test_static_scan_of_tensorrt_calls(api):
    errors, n = [], 0
    for f in TRT_FILES:
        path = os.path.join(DEPLOY, f)
        for what, owner, name, n_pos, kws, line in _scan(path):
            n += 1
            where = f"ppyolo_slim/deploy/{f}:{line}"
            if what == "call":
                if owner in api.classes and name in api.cls(owner).nested:
                    continue
                e = api.check_call(owner, name, n_pos, kws)
            elif what == "trtcall":
                if name in api.classes:        # a constructor: trt.Builder(logger), trt.Weights(a)
                    e = api.check_call(name, "__init__", n_pos, kws)
                elif name not in api.module_names:
                    e = f"tensorrt.{name}: no such function"
                else:
                    e = api.check_call(None, name, n_pos, kws) if name in api.functions else None
            elif what == "module":
                e = None if name in api.module_names or name.startswith("__") else f"tensorrt.{name}: no such name"
            elif what == "set":
                e = None if api.can_set(owner, name) else f"{owner}.{name}: not a settable attribute"
            else:     # get: attribute, property, enum member or method object
                e = None if api.has_attr(owner, name) else f"{owner}.{name}: no such attribute"
            if e:
                errors.append(f"{where}: {e}")
    assert n > 40, f"the scan found only {n} TensorRT uses; is the naming convention still kept?"
    assert not errors, "TensorRT uses the real API does not have:\n" + "\n".join(errors)


def test_enum_members_used_exist(api):
    """Members named by the builder and engine code, and the ones the stand-in defines."""
    used = set()
    for f in TRT_FILES:
        for what, owner, name, *_ in _scan(os.path.join(DEPLOY, f)):
            if what == "get" and owner in api.classes and api.cls(owner).members:
                used.add((owner, name))
    for cls, member in [("ActivationType", "SIGMOID"), ("ElementWiseOperation", "PROD"),
                        ("ElementWiseOperation", "SUM"), ("PoolingType", "MAX"),
                        ("InterpolationMode", "NEAREST"), ("ScaleMode", "CHANNEL"),
                        ("ResizeRoundMode", "FLOOR"), ("ResizeCoordinateTransformation", "ASYMMETRIC"),
                        ("PluginFieldType", "FLOAT32"), ("MemoryPoolType", "WORKSPACE"),
                        ("BuilderFlag", "FP16"), ("BuilderFlag", "INT8"), ("TensorIOMode", "INPUT"),
                        ("NetworkDefinitionCreationFlag", "STRONGLY_TYPED")]:
        assert (cls, member) in used or cls in ("ScaleMode", "PluginFieldType"), (cls, member)
        used.add((cls, member))
    missing = [f"{c}.{m}" for c, m in sorted(used) if m not in api.cls(c).members]
    assert not missing, f"enum members TensorRT does not have: {missing}"
    # the stand-in's enums are a subset of TensorRT's (same names), so the builder cannot
    # lean on a member only the stand-in has
    for name, obj in vars(numpy_net).items():
        if isinstance(obj, type) and issubclass(obj, numpy_net.enum.Enum):
            extra = set(obj.__members__) - api.cls(name).members
            assert not extra, f"numpy_net.{name} has members TensorRT lacks: {extra}"


def test_calibrator_implements_tensorrt_methods(api):
    from ppyolo_slim.deploy.calibrator import CalibratorLogic
    mine = {n for n in vars(CalibratorLogic) if not n.startswith("_")}
    theirs = set(api.cls("IInt8EntropyCalibrator2").methods)
    assert mine <= theirs, f"calibrator methods TensorRT never calls: {mine - theirs}"
    assert {"get_batch", "get_batch_size", "read_calibration_cache", "write_calibration_cache"} <= mine


def test_missing_stubs_fail_with_install_hint(monkeypatch, tmp_path):
    import ppyolo_slim.deploy.trt_stubs as S
    monkeypatch.setattr(S.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(S.sys, "path", [str(tmp_path)])
    with pytest.raises(StubsMissing, match="pip install --no-deps tensorrt-stubs=="):
        S.stub_files()


# ---------------------------------------------------------------- engine.py against a recording fake TensorRT
class _Rec:
    """Records calls and attribute sets as the stand-in does, under a TensorRT class name."""

    def __init__(self, cls, log, **attrs):
        object.__setattr__(self, "_cls", cls)
        object.__setattr__(self, "_log", log)
        for k, v in attrs.items():
            object.__setattr__(self, k, v)

    def __setattr__(self, k, v):
        self._log.append((self._cls, k, -1, ()))
        object.__setattr__(self, k, v)


def _fake_tensorrt(log, calls, major=10):
    import types

    def method(cls, name, result=None):
        def f(*a, **k):
            log.append((cls, name, len(a), tuple(sorted(k))))
            calls.append((name, a, k))
            return result(*a, **k) if callable(result) else result
        return f

    def enum(**members):
        return types.SimpleNamespace(**members)

    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.13.0.35" if major == 10 else "11.4.0.106"
    trt.Logger = type("Logger", (), {"WARNING": 2, "VERBOSE": 4, "__init__": lambda self, *a: None})
    trt.init_libnvinfer_plugins = method("<module>", "init_libnvinfer_plugins", True)
    trt.MemoryPoolType = enum(WORKSPACE=0)
    # 11 has no FP16 / INT8 builder flags (the 11.4 bindings' strings list the rest, TF32 among them)
    trt.BuilderFlag = enum(FP16=0, INT8=1, TF32=6, OBEY_PRECISION_CONSTRAINTS=11) if major == 10 \
        else enum(TF32=object())
    trt.NetworkDefinitionCreationFlag = numpy_net.creation_flag_enum(major)

    class IInt8EntropyCalibrator2:
        def __init__(self):
            pass
    trt.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2
    for name in ("ActivationType", "ElementWiseOperation", "PoolingType", "InterpolationMode",
                 "ResizeCoordinateTransformation", "ResizeRoundMode", "ResizeSelector", "ScaleMode",
                 "PluginFieldType", "TensorRTPhase", "Weights", "PluginField", "PluginFieldCollection",
                 "get_plugin_registry", "float32", "float16", "int32", "IPluginCreatorV3One",
                 "BoundingBoxFormat", "GatherMode"):
        setattr(trt, name, getattr(numpy_net, name))

    def make_builder(logger):
        profile = lambda: _Rec("IOptimizationProfile", log, set_shape=method("IOptimizationProfile", "set_shape"))
        config = lambda: _Rec("IBuilderConfig", log, **{m: method("IBuilderConfig", m) for m in (
            "set_memory_pool_limit", "set_flag", "clear_flag", "add_optimization_profile",
            "set_calibration_profile")})
        return _Rec("Builder", log, platform_has_fast_fp16=True,
                    create_network=method("Builder", "create_network",
                                          lambda flags=0: numpy_net.create_network(flags, major=major)),
                    create_builder_config=method("Builder", "create_builder_config", config),
                    create_optimization_profile=method("Builder", "create_optimization_profile", profile),
                    build_serialized_network=method("Builder", "build_serialized_network",
                                                    lambda network, config: b"serialized-engine"))
    trt.Builder = make_builder
    return trt


@pytest.mark.parametrize("kind", ["fp16_dynamic_nms", "int8", "tensorrt11_fp16", "int8_qdq", "tensorrt11_int8_qdq"])
def test_engine_build_path_with_a_recording_fake_tensorrt(api, kind, tmp_path, monkeypatch, ptq_dir):
    """ppyolo_slim/deploy/engine.py end to end (flags, profile, calibrator, atomic engine + sidecar) against a
    fake TensorRT whose builder hands out the stand-in network; every call it receives is then
    checked against the stubs. This is the closest to an engine build these machines allow."""
    import json
    import types
    import cv2
    from ppyolo_slim.deploy import engine as E
    from ppyolo_slim.model import ModelMeta, build_model, save_weights
    meta = ModelMeta(nc=2, names=["a", "b"])
    weights = str(tmp_path / "w.pdparams")
    save_weights(weights, build_model(meta).state_dict(), meta)
    log, calls = [], []
    numpy_net.clear_api_log()
    trt = _fake_tensorrt(log, calls, major=11 if kind.startswith("tensorrt11") else 10)
    monkeypatch.setattr(E, "require_tensorrt_and_gpu", lambda: (trt, "fake GPU"))
    monkeypatch.setattr("ppyolo_slim.deploy.device.get_backend",
                        lambda *a, **k: types.SimpleNamespace(from_host=lambda x: types.SimpleNamespace(ptr=1)))
    o = E.EngineOptions(img_size=(64, 64), workspace_gib=0.5)
    if kind == "fp16_dynamic_nms":
        o.fp16, o.dynamic, o.nms = True, (1, 2, 4), B.NMSOptions()
    elif kind == "int8":
        d = tmp_path / "calib"
        d.mkdir()
        for i in range(2):
            cv2.imwrite(str(d / f"{i}.png"), np.full((32, 48, 3), 60 * i, np.uint8))
        o.int8, o.calib_dir, o.calib_cache, o.calib_batch = True, str(d), str(tmp_path / "c.cache"), 1
        o.dynamic = (1, 2, 4)        # TensorRT calibrates at the opt shape: batches of 2, whatever --calib-batch
        from ppyolo_slim.deploy import calibrator as C
        real_make, calib_batches = C.make_entropy_calibrator, []
        monkeypatch.setattr(C, "make_entropy_calibrator",
                            lambda t, images, *a: calib_batches.append(images.batch) or real_make(t, images, *a))
    elif kind.endswith("int8_qdq"):
        o.int8_from, weights = ptq_dir, None          # the folder's report names the weights
    else:
        o.fp16 = True
    out = str(tmp_path / "m.engine")
    side = E.build_engine(weights, out, o, log=lambda *a: None)
    assert open(out, "rb").read() == b"serialized-engine"
    assert json.load(open(out + ".json")) == json.loads(json.dumps(side))
    names = [c[0] for c in calls]
    flags = [c[1][0] for c in calls if c[0] == "set_flag"]
    created = calls[names.index("create_network")][1][0]
    assert [c[1][0] for c in calls if c[0] == "clear_flag"] == [trt.BuilderFlag.TF32] and side["tf32"] is False
    if kind == "fp16_dynamic_nms":   # TensorRT 10: the strongly typed FP16 graph too, no FP16 flag
        assert flags == [] and side["strongly_typed"] and created == 1 << 1 and "set_shape" in names
        assert side["batch"] == {"min": 1, "opt": 2, "max": 4} and side["outputs"][0]["name"] == "nms_indices"
        assert side["nms"]["backend_used"] == "layer"
        assert [c for c in calls if c[0] == "set_shape"][0][1][1:] == ((1, 3, 64, 64), (2, 3, 64, 64), (4, 3, 64, 64))
    elif kind == "int8":      # the decode held in FP32, obeyed
        assert set(flags) == {trt.BuilderFlag.FP16, trt.BuilderFlag.INT8, trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS}
        assert ("IBuilderConfig", "int8_calibrator", -1, ()) in log and created == 0 and side["precision"] == "int8"
        assert calib_batches == [2] and ("IBuilderConfig", "set_calibration_profile", 1, ()) in log
        pinned = [e for e in numpy_net.API_LOG if e[1] == "set_output_type"]
        assert any(e[0] == "IActivationLayer" for e in pinned) and any(e[0] == "IElementWiseLayer" for e in pinned)
        assert not any(e[0] == "IConvolutionLayer" for e in pinned)
    elif kind.endswith("int8_qdq"):     # explicit Q/DQ: strongly typed on 10 and 11, no precision flag
        assert flags == [] and side["strongly_typed"] and side["precision"] == "int8"
        assert created == 1 << (0 if kind.startswith("tensorrt11") else 1)
        assert side["int8"]["quantized_convs"] == 57 and side["weights"].endswith("tiny5.pdparams")
        assert ("INetworkDefinition", "add_quantize", 2, ()) in numpy_net.API_LOG
    else:        # TensorRT 11: STRONGLY_TYPED is bit 0 there (bit 1 is PREFER_JIT_PYTHON_PLUGINS)
        assert flags == [] and side["strongly_typed"] and side["precision"] == "fp16"
        assert created == 1 << 0
    errors = [e for e in (_check_entry(api, *u) for u in sorted(set(log + numpy_net.API_LOG))) if e]
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("major", [10, 11])
def test_fp16_engine_network_is_the_one_the_check_runs(major, tmp_path, monkeypatch):
    """On TensorRT 10 as on 11, engine.py builds for --fp16 exactly the strongly typed graph that
    `trt_build.py --check --fp16` executes (same layers, names, types), without BuilderFlag.FP16."""
    import types
    from ppyolo_slim.deploy import engine as E
    from ppyolo_slim.deploy.check import run_standin
    from ppyolo_slim.model import ModelMeta, build_model, save_weights
    meta = ModelMeta(nc=2, names=["a", "b"])
    weights = str(tmp_path / "w.pdparams")
    save_weights(weights, build_model(meta).state_dict(), meta)
    log, calls, made = [], [], []
    trt = _fake_tensorrt(log, calls, major=major)
    real = trt.Builder

    def builder(logger):
        b = real(logger)
        create = b.create_network
        object.__setattr__(b, "create_network", lambda flags=0: made.append(create(flags)) or made[-1])
        return b
    trt.Builder = builder
    monkeypatch.setattr(E, "require_tensorrt_and_gpu", lambda: (trt, "fake GPU"))
    E.build_engine(weights, str(tmp_path / "m.engine"), E.EngineOptions(img_size=(64, 64), fp16=True),
                   log=lambda *a: None)
    assert "set_flag" not in [c[0] for c in calls] and made[0]._strongly_typed
    state, m = B.load_checkpoint(weights)
    check_net = run_standin(state, m, B.BuildOptions(img_size=(64, 64), fp16_graph=True),
                            np.zeros((1, 3, 64, 64), np.float32), strongly_typed=True)[2]

    def layers(net):
        return [(type(l).__name__, l.name, [t.dtype for t in l._outputs]) for l in net._layers]
    assert layers(made[0]) == layers(check_net)


# ---------------------------------------------------------------- TensorRT 11.x, from its bindings wheel
TRT11_RECORD = os.path.join(ROOT, "tests", "fixtures", "tensorrt_11_bindings_api.json")
# used only where TensorRT 10 is required (INT8 with a calibrator: precision_plan refuses it on 11)
TEN_ONLY = {"IInt8EntropyCalibrator2", "int8_calibrator", "set_calibration_profile", "FP16", "INT8"}


@pytest.fixture(scope="module")
def api11():
    from ppyolo_slim.deploy.trt_wheel_api import load
    return load(TRT11_RECORD)


def test_tensorrt11_bindings_have_every_name_deploy_uses(api11, recorded):
    """Every class, method, keyword, attribute and enum member deploy/ uses on a TensorRT 11
    path is a string of the 11.x bindings, and where 11.x documents a method's arguments the
    call's keywords are among them (tests/fixtures/tensorrt_11_bindings_api.json, read from the wheel by
    ppyolo_slim/deploy/trt_wheel_api.py). Weaker than the 10.13 signature check: see its doc."""
    assert api11.version.startswith("11.")
    errors, n_args = [], 0
    for owner, name, n_pos, kws in sorted(set(recorded)):
        for word in [owner, name, *kws]:
            if word != "<module>" and not word.startswith("__") and not api11.has_name(word):
                errors.append(f"{owner}.{name}: {word!r} is not in TensorRT {api11.version}")
        args = api11.args(owner, name) if n_pos >= 0 else None
        if args is not None:      # docstrings may leave arguments out (create_plugin's phase): keywords only
            n_args += 1
            if not set(kws) <= set(args):
                errors.append(f"{owner}.{name}(keywords {list(kws)}) vs 11.x's documented {args}")
    for f in TRT_FILES:
        if f == "calibrator.py":                 # INT8 calibration: TensorRT 10 only
            continue
        for what, owner, name, n_pos, kws, line in _scan(os.path.join(DEPLOY, f)):
            if name in TEN_ONLY or name.startswith("__"):
                continue
            for word in [w for w in (owner, name, *kws) if w]:
                if not api11.has_name(word):
                    errors.append(f"ppyolo_slim/deploy/{f}:{line}: {word!r} is not in TensorRT {api11.version}")
            args = api11.args(owner, name) if owner and what == "call" else None
            if args is not None:
                n_args += 1
                if not set(kws) <= set(args):
                    errors.append(f"ppyolo_slim/deploy/{f}:{line}: {owner}.{name}(keywords {list(kws)}) vs {args}")
    assert n_args > 15, f"only {n_args} calls had documented 11.x arguments"
    assert not errors, "\n".join(errors)


def test_tensorrt11_lacks_what_deploy_keeps_behind_the_version_gates(api11):
    """What 11 removed, so deploy/ must not reach it there: implicit INT8 and its calibrator,
    BuilderFlag.FP16 (the FP16 graph is strongly typed on both majors), platform_has_fast_fp16
    (read with getattr); what 11 still has that deploy relies on."""
    for gone in ("IInt8EntropyCalibrator2", "int8_calibrator", "set_calibration_profile",
                 "platform_has_fast_fp16", "FP16"):
        assert not api11.has_name(gone), gone
    for kept in ("add_nms", "topk_box_limit", "CORNER_PAIRS", "TF32", "clear_flag", "STRONGLY_TYPED",
                 "PREFER_JIT_PYTHON_PLUGINS", "set_output_allocator", "reallocate_output", "notify_shape",
                 "add_plugin_v2", "IPluginCreatorV3One", "execute_async_v3"):
        assert api11.has_name(kept), kept
    assert not api11.has_name("EXPLICIT_BATCH")
    assert api11.args("INetworkDefinition", "add_nms")[:3] == ["boxes", "scores", "max_output_boxes_per_class"]


def test_wheel_reader_on_the_wheel_itself(tmp_path):
    """Re-extract from the wheel when it is at hand (PPYOLO_SLIM_TRT11_WHEEL=path) and compare
    with the committed record; the reader's parsing is exercised on a synthetic symbol too."""
    from ppyolo_slim.deploy import trt_wheel_api as W
    assert W._demangle_doc("_ZN8tensorrt21INetworkDefinitionDocL7add_nmsE") == ("INetworkDefinition", "add_nms")
    assert W._demangle_doc("_ZN8tensorrt17IBuilderConfigDocL10clear_flagE.lto_priv.0") == ("IBuilderConfig",
                                                                                             "clear_flag")
    assert W._demangle_doc("_ZN8tensorrt7lambdasL3fooE") is None
    wheel = os.environ.get("PPYOLO_SLIM_TRT11_WHEEL")
    if not wheel:
        pytest.skip("set PPYOLO_SLIM_TRT11_WHEEL to a tensorrt-cu12-bindings 11.x wheel to re-extract")
    import json
    rec = W.extract(wheel)
    committed = json.load(open(TRT11_RECORD))
    if rec["sha256"] == committed["sha256"]:
        assert rec == committed
