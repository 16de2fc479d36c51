"""Ultralytics YOLOv5 .pt -> .pdparams (model/pt_reader.py, model/convert.py, tools/convert_weights.py).

The checkpoints are made here with torch, from stand-ins for ultralytics' module classes
(``models.yolo.DetectionModel``/``Detect``, ``models.common.Conv``/``C3``/...), with its
attribute names, layer list parsing, anchors divided by stride, and its save call
(``{'model': model.half(), 'ema': None, ...}``). Their forward is an independent torch
YOLOv5 v6 (conv-bn-silu, C3, SPPF, nearest upsample, concat, Detect decode) and gives the
reference predictions. The fake modules are removed before converting, so neither torch's
loader nor ultralytics code is involved in reading the files.
"""
import copy
import math
import os
import subprocess
import sys
import types
import warnings

import numpy as np
import pytest

import ppyolo_slim  # noqa: F401  (before paddle)

torch = pytest.importorskip("torch", reason="torch is not installed; the converter test builds "
                                            "its ultralytics checkpoints with torch")
nn = torch.nn

from ppyolo_slim.model.convert import ConvertError, read_ultralytics  # noqa: E402
from ppyolo_slim.model.pt_reader import load_torch_file  # noqa: E402
from ppyolo_slim.model.channels import WeightShapeError  # noqa: E402
from ppyolo_slim.model.weights import CheckpointError, UnsafeCheckpointError  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = {0: "person", 1: "bicycle", 2: "car"}
ANCHORS = [[10.5, 13, 16, 30.25, 33, 23], [30, 61, 62, 45, 59, 119.5], [116, 90, 156, 198, 373, 326]]
YOLOV5N = {   # ultralytics models/yolov5n.yaml, with nc=3 and evolved-looking anchors
    "nc": 3, "depth_multiple": 0.33, "width_multiple": 0.25, "anchors": ANCHORS,
    "backbone": [[-1, 1, "Conv", [64, 6, 2, 2]], [-1, 1, "Conv", [128, 3, 2]], [-1, 3, "C3", [128]],
                 [-1, 1, "Conv", [256, 3, 2]], [-1, 6, "C3", [256]], [-1, 1, "Conv", [512, 3, 2]],
                 [-1, 9, "C3", [512]], [-1, 1, "Conv", [1024, 3, 2]], [-1, 3, "C3", [1024]],
                 [-1, 1, "SPPF", [1024, 5]]],
    "head": [[-1, 1, "Conv", [512, 1, 1]], [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
             [[-1, 6], 1, "Concat", [1]], [-1, 3, "C3", [512, False]],
             [-1, 1, "Conv", [256, 1, 1]], [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
             [[-1, 4], 1, "Concat", [1]], [-1, 3, "C3", [256, False]],
             [-1, 1, "Conv", [256, 3, 2]], [[-1, 14], 1, "Concat", [1]], [-1, 3, "C3", [512, False]],
             [-1, 1, "Conv", [512, 3, 2]], [[-1, 10], 1, "Concat", [1]], [-1, 3, "C3", [1024, False]],
             [[17, 20, 23], 1, "Detect", ["nc", "anchors"]]],
}


# ---------------------------------------------------------------- stand-ins for ultralytics' classes

class Conv(nn.Module):
    def __init__(self, c1, c2, k=1, s=1, p=None):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2 if p is None else p, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = nn.SiLU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, c1, c2, shortcut=True):
        super().__init__()
        self.cv1 = Conv(c1, c2, 1, 1)
        self.cv2 = Conv(c2, c2, 3, 1)
        self.add = shortcut and c1 == c2

    def forward(self, x):
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C3(nn.Module):
    def __init__(self, c1, c2, n=1, shortcut=True):
        super().__init__()
        c_ = int(c2 * 0.5)
        self.cv1, self.cv2, self.cv3 = Conv(c1, c_), Conv(c1, c_), Conv(2 * c_, c2)
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut) for _ in range(n)))

    def forward(self, x):
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class SPPF(nn.Module):
    def __init__(self, c1, c2, k=5):
        super().__init__()
        c_ = c1 // 2
        self.cv1, self.cv2 = Conv(c1, c_), Conv(c_ * 4, c2)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x):
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat((x, y1, y2, self.m(y2)), 1))


class Focus(nn.Module):   # the v5-era stem (space-to-depth + conv), replaced in v6
    def __init__(self, c1, c2, k=3):
        super().__init__()
        self.conv = Conv(c1 * 4, c2, k)


class Concat(nn.Module):
    def __init__(self, dimension=1):
        super().__init__()
        self.d = dimension

    def forward(self, x):
        return torch.cat(x, self.d)


class Detect(nn.Module):
    stride = None

    def __init__(self, nc, anchors, ch):
        super().__init__()
        self.nc, self.no, self.nl, self.na = nc, nc + 5, len(anchors), len(anchors[0]) // 2
        self.grid = [torch.empty(0) for _ in range(self.nl)]
        self.anchor_grid = [torch.empty(0) for _ in range(self.nl)]
        self.register_buffer("anchors", torch.tensor(anchors).float().view(self.nl, -1, 2))
        self.m = nn.ModuleList(nn.Conv2d(x, self.no * self.na, 1) for x in ch)
        self.inplace = True

    def forward(self, x):
        z = []
        for i in range(self.nl):
            x[i] = self.m[i](x[i])
            bs, _, ny, nx = x[i].shape
            x[i] = x[i].view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()
            if not self.training:
                yv, xv = torch.meshgrid(torch.arange(ny), torch.arange(nx), indexing="ij")
                grid = torch.stack((xv, yv), 2).expand(1, self.na, ny, nx, 2).float() - 0.5
                anchor_grid = (self.anchors[i] * self.stride[i]).view(1, self.na, 1, 1, 2)
                xy, wh, conf = x[i].sigmoid().split((2, 2, self.nc + 1), 4)
                xy = (xy * 2 + grid) * self.stride[i]
                wh = (wh * 2) ** 2 * anchor_grid
                z.append(torch.cat((xy, wh, conf), 4).view(bs, self.na * nx * ny, self.no))
        return x if self.training else torch.cat(z, 1)


def _make_divisible(x, d=8):
    return math.ceil(x / d) * d


def parse_model(d, ch):
    gd, gw, nc = d["depth_multiple"], d["width_multiple"], d["nc"]
    layers, save, ch = [], [], [ch]
    blocks = {"Conv": Conv, "C3": C3, "SPPF": SPPF, "Concat": Concat, "Detect": Detect,
              "nn.Upsample": nn.Upsample}
    for i, (f, n, m, args) in enumerate(d["backbone"] + d["head"]):
        m = blocks[m]
        args = [nc if a == "nc" else d["anchors"] if a == "anchors" else a for a in args]
        n = max(round(n * gd), 1) if n > 1 else n
        if m in (Conv, C3, SPPF):
            c1, c2 = ch[f], _make_divisible(args[0] * gw)
            args = [c1, c2, *args[1:]]
            if m is C3:
                args.insert(2, n)
                n = 1
        elif m is Concat:
            c2 = sum(ch[x] for x in f)
        elif m is Detect:
            args.append([ch[x] for x in f])
        else:
            c2 = ch[f]
        m_ = nn.Sequential(*(m(*args) for _ in range(n))) if n > 1 else m(*args)
        m_.i, m_.f, m_.type = i, f, str(m)[8:-2]
        save.extend(x % i for x in ([f] if isinstance(f, int) else f) if x != -1)
        layers.append(m_)
        if i == 0:
            ch = []
        ch.append(c2)
    return nn.Sequential(*layers), sorted(save)


class DetectionModel(nn.Module):
    def __init__(self, cfg, ch=3):
        super().__init__()
        self.yaml = copy.deepcopy(cfg)
        self.model, self.save = parse_model(self.yaml, ch)
        self.names = [str(i) for i in range(cfg["nc"])]
        self.inplace = True
        m = self.model[-1]
        s = 256
        m.stride = torch.tensor([s / x.shape[-2] for x in self.forward(torch.zeros(1, ch, s, s))])
        m.anchors /= m.stride.view(-1, 1, 1)   # ultralytics keeps anchors in stride units
        self.stride = m.stride

    def forward(self, x):
        y = []
        for m in self.model:
            if m.f != -1:
                x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
            x = m(x)
            y.append(x if m.i in self.save else None)
        return x

    def __setstate__(self, state):   # torch.load would run this; the converter must not
        marker = os.environ.get("PPYOLO_TEST_SETSTATE_MARKER")
        if marker:
            open(marker, "w").close()
        super().__setstate__(state)


FAKE = {"models.yolo": (DetectionModel, Detect), "models.common": (Conv, Bottleneck, C3, SPPF, Concat, Focus)}


def install_fake_ultralytics():
    saved = {k: sys.modules.get(k) for k in ["models", *FAKE]}
    sys.modules["models"] = types.ModuleType("models")
    for mod, classes in FAKE.items():
        m = types.ModuleType(mod)
        for c in classes:
            c.__module__, c.__qualname__ = mod, c.__name__
            setattr(m, c.__name__, c)
        sys.modules[mod] = m
        setattr(sys.modules["models"], mod.split(".")[1], m)
    return saved


def remove_fake_ultralytics(saved):
    for k, v in saved.items():
        if v is None:
            sys.modules.pop(k, None)
        else:
            sys.modules[k] = v


def randomise(model, seed=0):
    """Random BN scales and shifts; running statistics measured on one batch (so activations
    stay in range through 25 layers: var ~0.03, non-zero means), then slightly perturbed.
    Perturbing them more compounds layer over layer and saturates every sigmoid."""
    g = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    model.train()
    with torch.no_grad():
        for bn in bns:
            bn.weight.copy_(0.5 + torch.rand(bn.num_features, generator=g))
            bn.bias.copy_(0.2 * torch.randn(bn.num_features, generator=g))
            bn.reset_running_stats()
            bn.momentum = None          # one batch: running stats = that batch's stats
        model(torch.rand(4, 3, 96, 128, generator=g))
        for bn in bns:
            c = bn.num_features
            bn.running_mean += 0.02 * bn.running_var.sqrt() * torch.randn(c, generator=g)
            bn.running_var *= 0.95 + 0.1 * torch.rand(c, generator=g)
            bn.eps, bn.momentum = 1e-3, 0.03   # ultralytics' initialize_weights
        for conv in model.model[-1].m:
            conv.bias.copy_(0.5 * torch.randn(conv.bias.shape, generator=g))
    model.eval()
    return model


def ultralytics_checkpoint(model, ema=None):
    return {"epoch": -1, "best_fitness": None, "model": model, "ema": ema, "updates": None,
            "optimizer": None, "opt": {"imgsz": 640, "weights": "yolov5n.pt", "hyp": {"lr0": 0.01}},
            "git": {"remote": "https://github.com/ultralytics/yolov5", "branch": "master"},
            "date": "2024-01-01T00:00:00"}


def fuse_state(sd):
    """ultralytics' fuse_conv_and_bn, on a state dict: conv gets the BN folded in, as a bias."""
    out = {}
    for k, v in sd.items():
        if ".bn." in k:
            continue
        if k.endswith(".conv.weight"):
            b = k[: -len("conv.weight")] + "bn."
            s = sd[b + "weight"] / torch.sqrt(sd[b + "running_var"] + 1e-3)
            out[k] = v * s.view(-1, 1, 1, 1)
            out[k[: -len("weight")] + "bias"] = sd[b + "bias"] - sd[b + "running_mean"] * s
        else:
            out[k] = v
    return out


@pytest.fixture(scope="module")
def pt(tmp_path_factory):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("ultralytics")
    saved = install_fake_ultralytics()
    try:
        model = randomise(DetectionModel(YOLOV5N))
        model.nc, model.names = 3, dict(NAMES)
        x = torch.rand(2, 3, 96, 128, generator=torch.Generator().manual_seed(1))   # nx != ny
        with torch.no_grad():
            ref_f32 = model(x).numpy()
            sd = {k: v.clone() for k, v in model.state_dict().items()}
            torch.save(sd, d / "state.pt")
            torch.save(fuse_state(sd), d / "fused.pt")
            # one BN trained with another eps: the converter folds it into the variance
            model.model[4].m[0].cv2.bn.eps = 1e-5
            half = copy.deepcopy(model).half()
            ref_half = copy.deepcopy(half).float()(x).numpy()   # same rounded weights as the file
            torch.save(ultralytics_checkpoint(half), d / "release.pt")
            other = copy.deepcopy(half)
            for p in other.parameters():
                p.mul_(0.5)
            torch.save(ultralytics_checkpoint(other, ema=half), d / "train.pt")
            with warnings.catch_warnings():   # legacy format: "couldn't retrieve source code"
                warnings.simplefilter("ignore", UserWarning)
                torch.save(ultralytics_checkpoint(half), d / "legacy.pt",
                           _use_new_zipfile_serialization=False)
            leaky = copy.deepcopy(model)
            leaky.model[0].act = nn.LeakyReLU(0.1)
            torch.save(ultralytics_checkpoint(leaky), d / "leaky.pt")
            v5 = copy.deepcopy(model)
            v5.model[0] = Focus(3, 16)
            v5.model[0].i, v5.model[0].f = 0, -1
            torch.save(ultralytics_checkpoint(v5), d / "focus.pt")
            torch.save(model, d / "bare_model.pt")
    finally:
        remove_fake_ultralytics(saved)
    return dict(dir=d, x=x.numpy(), ref_f32=ref_f32, ref_half=ref_half)


def paddle_predict(state, meta, x):
    import paddle
    from ppyolo_slim.model import build_model
    model = build_model(meta, state)
    model.eval()
    with paddle.no_grad():
        return model(paddle.to_tensor(x)).numpy()


def rel_err(a, b):
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max() / np.abs(b).max())


# ---------------------------------------------------------------- conversion gives the same predictions

def test_release_checkpoint_half_precision(pt, tmp_path):
    from ppyolo_slim import load_model
    import paddle
    from ppyolo_slim.model.convert import convert_ultralytics
    assert "models.yolo" not in sys.modules    # ultralytics' classes are not importable here
    dst = tmp_path / "yolov5n.pdparams"
    report = convert_ultralytics(str(pt["dir"] / "release.pt"), str(dst))
    assert report["used"] == "model" and report["source_dtype"] == ["float16"]
    assert report["eps_adjusted"] == 1
    model = load_model(str(dst))
    m = model.meta
    assert (m.nc, m.names, m.depth_multiple, m.width_multiple) == (3, list(NAMES.values()), 0.33, 0.25)
    np.testing.assert_allclose(np.asarray(m.anchors), np.asarray(ANCHORS, np.float32), rtol=1e-3)
    assert m.made_by["stage"] == "convert" and m.made_by["source"].endswith("release.pt")
    with paddle.no_grad():
        pred = model(paddle.to_tensor(pt["x"])).numpy()
    assert pred.shape == pt["ref_half"].shape == (2, 3 * (12 * 16 + 6 * 8 + 3 * 4), 8)
    # Against torch on the very weights the file holds (fp16 values, float32 arithmetic):
    # what is left is float32 summation order over 25 layers (measured 2e-5 of the range).
    # The original fp32 model is 1.5e-2 away, all of it the fp16 rounding the file carries.
    assert rel_err(pred, pt["ref_half"]) < 1e-4
    np.testing.assert_allclose(pred[..., 4:], pt["ref_half"][..., 4:], atol=1e-4)


def test_plain_state_dict_float32(pt):
    state, meta, report = read_ultralytics(str(pt["dir"] / "state.pt"), names=["a", "b", "c"])
    assert report["used"] == "file" and report["multiples_from"] == "shapes"
    assert (meta.nc, meta.names, meta.depth_multiple, meta.width_multiple) == (3, ["a", "b", "c"], 0.33, 0.25)
    pred = paddle_predict(state, meta, pt["x"])
    assert rel_err(pred, pt["ref_f32"]) < 1e-4   # float32 all through: measured 2.7e-5
    np.testing.assert_allclose(pred[..., 4:], pt["ref_f32"][..., 4:], atol=1e-4)
    # the comparison is sensitive: one BN variance off by 2x is far outside the tolerance
    bad = dict(state)
    bad["model.8.cv1.bn._variance"] = bad["model.8.cv1.bn._variance"] * 2
    assert rel_err(paddle_predict(bad, meta, pt["x"]), pt["ref_f32"]) > 1e-2


def test_fused_state_dict_gets_identity_bn(pt):
    state, meta, report = read_ultralytics(str(pt["dir"] / "fused.pt"))
    assert report["unfused"] == 57 and meta.names == ["class0", "class1", "class2"]
    assert rel_err(paddle_predict(state, meta, pt["x"]), pt["ref_f32"]) < 1e-4


def test_ema_preferred_and_selectable(pt):
    rel, _, _ = read_ultralytics(str(pt["dir"] / "release.pt"))
    ema, _, r1 = read_ultralytics(str(pt["dir"] / "train.pt"))
    raw, _, r2 = read_ultralytics(str(pt["dir"] / "train.pt"), use="model")
    assert (r1["used"], r2["used"]) == ("ema", "model")
    k = "model.0.conv.weight"
    assert np.array_equal(ema[k], rel[k])
    np.testing.assert_allclose(raw[k], rel[k] * 0.5, rtol=1e-3, atol=1e-7)   # halved in fp16


def test_legacy_format_and_bare_model_match_zip(pt):
    ref, ref_meta, _ = read_ultralytics(str(pt["dir"] / "release.pt"))
    for name in ("legacy.pt", "bare_model.pt"):
        state, meta, _ = read_ultralytics(str(pt["dir"] / name))
        assert meta.anchors == ref_meta.anchors and meta.names == ref_meta.names
        assert list(state) == list(ref)
        if name == "legacy.pt":
            assert all(np.array_equal(state[k], ref[k]) for k in ref), name
    full = load_torch_file(str(pt["dir"] / "legacy.pt"))
    assert full["opt"]["hyp"] == {"lr0": 0.01} and full["epoch"] == -1


@pytest.mark.parametrize("zip_format", [True, False])
def test_tensor_kinds_match_torch(tmp_path, zip_format):
    g = torch.Generator().manual_seed(3)
    base = torch.randn(4, 5, generator=g)
    tensors = {dt: (torch.randn(3, 4, generator=g) * 50).to(getattr(torch, dt)) for dt in
               ("float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool")}
    tensors.update(transposed=base.t(), row_slice=base[1:3, ::2], shares_storage=base[2],
                   empty=torch.zeros(0, 3), scalar=torch.tensor(2.5), param=nn.Parameter(torch.ones(2)))
    src = tmp_path / "kinds.pt"
    torch.save(tensors, src, _use_new_zipfile_serialization=zip_format)
    got = load_torch_file(str(src))
    assert set(got) == set(tensors)
    for k, t in tensors.items():
        want = t.detach().float().numpy() if t.dtype == torch.bfloat16 else t.detach().numpy()
        assert got[k].dtype == want.dtype and got[k].shape == want.shape, k
        assert np.array_equal(got[k], want), k


def test_cli_without_torch_or_ultralytics(pt, tmp_path):
    dst = tmp_path / "cli.pdparams"
    code = ("import sys, runpy; sys.modules['torch'] = None; sys.modules['models'] = None; "
            f"sys.argv = ['convert_weights.py', '--src', {str(pt['dir'] / 'release.pt')!r}, "
            f"'--dst', {str(dst)!r}, '--names', 'x,y,z']; "
            "runpy.run_path('tools/convert_weights.py', run_name='__main__')")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "nc=3" in r.stdout
    from ppyolo_slim.model import load_weights
    state, meta = load_weights(str(dst))
    assert meta["names"] == ["x", "y", "z"] and "model.24.m.2.bias" in state
    assert all(v.dtype == np.float32 for v in state.values())


def test_cli_error_is_one_line(tmp_path, capsys):
    import importlib.util
    spec = importlib.util.spec_from_file_location("convert_weights", os.path.join(ROOT, "tools", "convert_weights.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main(["--src", str(tmp_path / "nope.pt")]) == 2
    err = capsys.readouterr().err
    assert "nope.pt" in err and len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------- safety and clear errors

class _System:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _Eval(_System):
    def __reduce__(self):
        return eval, (f"open({self.marker!r}, 'w').close()",)


class _Popen(_System):
    def __reduce__(self):
        return subprocess.Popen, (["touch", self.marker],)


@pytest.mark.parametrize("payload,refused,legacy", [
    (_System, "posix.system", False), (_Eval, "builtins.eval", False),
    (_Popen, "subprocess.Popen", False), (_System, "posix.system", True)])
def test_code_payload_is_refused_without_running(tmp_path, payload, refused, legacy):
    marker = tmp_path / "pwned"
    src = tmp_path / "evil.pt"
    torch.save({"model": payload(str(marker)), "epoch": -1}, src, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(UnsafeCheckpointError) as e:
        read_ultralytics(str(src))
    assert str(src) in str(e.value) and refused in str(e.value)
    assert not marker.exists()


def test_module_classes_are_not_constructed(pt, tmp_path, monkeypatch):
    """torch.load runs DetectionModel.__setstate__ (shown first, so the check can fail);
    the converter reads the same file with the class importable and never calls it."""
    marker = tmp_path / "setstate_ran"
    monkeypatch.setenv("PPYOLO_TEST_SETSTATE_MARKER", str(marker))
    saved = install_fake_ultralytics()
    try:
        read_ultralytics(str(pt["dir"] / "release.pt"))
        assert not marker.exists()
        torch.load(pt["dir"] / "release.pt", weights_only=False)
        assert marker.exists()
    finally:
        remove_fake_ultralytics(saved)


def test_truncated_and_foreign_files(pt, tmp_path):
    data = (pt["dir"] / "release.pt").read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(CheckpointError, match="truncated") as e:
        read_ultralytics(str(cut))
    assert str(cut) in str(e.value)
    junk = tmp_path / "notes.pt"
    junk.write_text("hello")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint") as e:
        read_ultralytics(str(junk))
    assert str(junk) in str(e.value)
    with pytest.raises(FileNotFoundError):
        read_ultralytics(str(tmp_path / "missing.pt"))


def test_wrong_architecture_and_shapes_name_the_layer(pt, tmp_path):
    with pytest.raises(ConvertError, match=r"model\.0\.act: .*LeakyReLU"):
        read_ultralytics(str(pt["dir"] / "leaky.pt"))
    with pytest.raises(ConvertError, match=r"focus\.pt: model\.0: is models\.common\.Focus, YOLOv5 v6\+ has Conv"):
        read_ultralytics(str(pt["dir"] / "focus.pt"))
    with pytest.raises(ConvertError, match=r"state\.pt: \['ema'\] is missing"):
        read_ultralytics(str(pt["dir"] / "state.pt"), use="ema")
    sd = torch.load(pt["dir"] / "state.pt", weights_only=True)
    sd["model.17.cv3.conv.weight"] = sd["model.17.cv3.conv.weight"][:, :-1]
    torch.save(sd, tmp_path / "bad.pt")
    with pytest.raises(WeightShapeError, match=r"bad\.pt: model\.17\.cv3\.conv\.weight"):
        read_ultralytics(str(tmp_path / "bad.pt"))
    with pytest.raises(ConvertError, match="2 class names for a Detect head of nc=3"):
        read_ultralytics(str(pt["dir"] / "state.pt"), names=["a", "b"])
