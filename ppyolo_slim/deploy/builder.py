"""Emit a YOLOv5 as TensorRT layers, one call at a time, from a ppyolo-slim ``.pdparams``.

The builder walks the same layer list the Paddle model is built from
(``ppyolo_slim.model.spec`` resolved by ``channels.resolve`` against the weights'
shapes), so original, pruned and converted checkpoints build without edits: every
channel count comes from a weight's shape, never from a width multiplier.

It talks to a network object and a ``trt`` namespace that are passed in: the real
``tensorrt`` module and ``builder.create_network()`` on a GPU machine, or
``ppyolo_slim.deploy.numpy_net`` and its :class:`NumpyNetwork` anywhere else. It must not know
which; only TensorRT 10 API calls are made here (``tests/test_deploy_api.py`` checks
each one against the tensorrt-stubs signatures).

Block emitters mirror ``ppyolo_slim/model/blocks.py`` one for one (each registers with
``@emits`` under its block's name, as the Paddle layer does with ``@paddle_layer``; the
block itself is described in ``model/block_types.py``): Conv = conv (BN folded) + SiLU
(sigmoid * x: TensorRT has no SiLU activation), C3, Bottleneck with/without shortcut, SPPF
(three 5x5 max pools), nearest x2 resize, concat, and the Detect head with the box decode
inside the network.

INT8 (``BuildOptions.int8``, the scales of a tools/quant.py folder, qdq_scales.py) is explicit
quantization as TensorRT's guide places it: a Q/DQ pair on each quantized conv's input
(per-tensor scale) and on its kernel (per-channel scales, axis 0), the conv reading the
dequantized kernel as input 1; TensorRT fuses them into an INT8 conv. Conv outputs, SiLU,
adds, concats and the whole Detect decode stay float (the convs PaddleSlim left float too).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ppyolo_slim.model.block_types import C3Type, registrar
from ppyolo_slim.model.channels import ConvSpec, ResolvedLayer, WeightShapeError, resolve
from ppyolo_slim.model.spec import NetSpec, expand
from ppyolo_slim.model import read_weights
from ppyolo_slim.model.weights import CheckpointError, ModelMeta

from .qdq_scales import QDQScales, ScalesError

INPUT_NAME = "images"
OUTPUT_NAME = "output"
# EfficientNMS_TRT's outputs (fixed shapes, zero rows past num_detections)
NMS_OUTPUTS = ("num_detections", "detection_boxes", "detection_scores", "detection_classes")
# INMSLayer's (data-dependent row count M, sorted by image, then score decreasing)
NMS_LAYER_OUTPUTS = ("nms_indices", "nms_boxes", "nms_scores")
NMS_TOPK = 5000        # candidates per image both keep (INMSLayer's default topk_box_limit)


@dataclass
class NMSOptions:
    """NMS inside the engine (scores = objectness x class probability).

    ``backend``: ``layer`` = INetworkDefinition.add_nms (INMSLayer, ONNX NonMaxSuppression
    semantics: a box is a candidate when its score > score_threshold, and is kept when its IoU
    with every kept box of its class is <= iou_threshold; at most ``max_output_boxes`` per class,
    the runtime keeps the best ``max_output_boxes`` per image); ``plugin`` = EfficientNMS_TRT
    (deprecated since TensorRT 10.12); ``auto``: the layer when the network has add_nms."""
    score_threshold: float = 0.25
    iou_threshold: float = 0.45
    max_output_boxes: int = 100
    class_agnostic: bool = False
    backend: str = "auto"


@dataclass
class BuildOptions:
    img_size: Tuple[int, int] = (640, 640)    # (height, width), multiples of the largest stride
    batch: int = 1                            # fixed batch; ignored when dynamic
    dynamic_batch: bool = False               # batch dimension -1 (needs an optimisation profile)
    fp16_graph: bool = False                  # strongly typed FP16: weights, constants and tensors in half
    bn_as_scale: bool = False                 # BN as an IScaleLayer (tensorrtx style) instead of folded
    float64_weights: bool = False             # the CPU check's exact comparison only (TensorRT has no float64)
    nms: Optional[NMSOptions] = None
    int8: Optional[QDQScales] = None          # explicit Q/DQ with these scales (a strongly typed FP32 graph)


@dataclass
class BuiltNetwork:
    """What the builder made: I/O names and shapes for the engine's sidecar."""
    input_name: str
    input_shape: Tuple[int, ...]
    outputs: List[Tuple[str, Tuple[int, ...]]]
    nc: int
    names: List[str]
    num_layers: int
    keep: List[np.ndarray] = field(default_factory=list, repr=False)  # weights TensorRT points at
    nms_backend: Optional[str] = None     # "layer" (INMSLayer) or "plugin" (EfficientNMS_TRT)
    int8: Optional[Dict[str, Any]] = None    # what was quantized, with which file's scales
    decode_layers: List[str] = field(default_factory=list)   # after the Detect convs: box decode (+ NMS)


def load_checkpoint(path: str) -> Tuple[Dict[str, np.ndarray], ModelMeta]:
    """Arrays and metadata of a .pdparams, read as ppyolo_slim.load_model reads them."""
    state, meta = read_weights(path)
    for k, v in state.items():      # as load_model: an engine built from NaN weights only gives NaN
        if v.dtype.kind == "f" and not np.isfinite(v).all():
            raise CheckpointError(f"{path}: {k} holds NaN or inf values")
    return state, meta


def netspec_for(meta: ModelMeta) -> NetSpec:
    return expand(meta.nc, meta.depth_multiple, meta.width_multiple, meta.anchors)


def _bn_eps() -> float:
    from ppyolo_slim.model.blocks import BN_EPS   # one source of truth for the Paddle blocks' eps
    return BN_EPS


# block name -> emit(_Emitter, ResolvedLayer, input tensors) -> its output tensor
EMITTERS: Dict[str, Callable[["_Emitter", ResolvedLayer, List[Any]], Any]] = {}
emits = registrar(EMITTERS)


class _Emitter:
    """Adds the layers of one network; every TensorRT call goes through ``self.network``/``self.trt``."""

    def __init__(self, network, trt, state: Mapping[str, np.ndarray], net: NetSpec, opts: BuildOptions):
        self.network, self.trt, self.state, self.net, self.opts = network, trt, state, net, opts
        self.wdtype = np.float16 if opts.fp16_graph else (np.float64 if opts.float64_weights else np.float32)
        self.keep: List[np.ndarray] = []
        self.eps = float(np.float32(_bn_eps()))   # Paddle's batch_norm holds epsilon as a float32 attribute
        self.weight_flips = 0        # INT8: kernel values our folding rounds one step off PaddleSlim's

    # -- helpers
    def weights(self, a: np.ndarray, dtype=None):
        """trt.Weights over an array we keep alive: TensorRT reads it only at build time."""
        a = np.ascontiguousarray(a, dtype=dtype or self.wdtype)
        self.keep.append(a)
        return self.trt.Weights(a)

    def param(self, key: str, shape: Optional[Tuple[int, ...]] = None) -> np.ndarray:
        if key not in self.state:
            raise WeightShapeError(f"{key}: missing from the weights")
        a = np.asarray(self.state[key])
        if shape is not None and tuple(a.shape) != tuple(shape):
            raise WeightShapeError(f"{key}: expected shape {list(shape)}, got {list(a.shape)}")
        if not np.all(np.isfinite(a)):
            raise CheckpointError(f"{key}: holds NaN or inf values")
        return a.astype(np.float64)

    def out(self, layer, name: str):
        layer.name = name
        return layer.get_output(0)

    def constant(self, a: np.ndarray, name: str, dtype=None):
        layer = self.network.add_constant(a.shape, self.weights(a, dtype))
        return self.out(layer, name)

    def decode_constant(self, a: np.ndarray, name: str):
        """Detect's decode constants: float32 even in the FP16 graph (float64 in the exact check)."""
        return self.constant(a, name, dtype=np.float64 if self.opts.float64_weights else np.float32)

    def elementwise(self, a, b, op, name: str):
        return self.out(self.network.add_elementwise(a, b, op), name)

    # -- blocks
    def silu(self, x, name: str):
        sig = self.out(self.network.add_activation(x, self.trt.ActivationType.SIGMOID), f"{name}.sigmoid")
        return self.elementwise(x, sig, self.trt.ElementWiseOperation.PROD, f"{name}.silu")

    @emits("Conv")
    def conv_block(self, r: ResolvedLayer, xs):
        return self.conv(xs[0], r.convs[""])

    def conv(self, x, cs: ConvSpec):
        """Conv2D(no bias) + BN + SiLU; BN folded: w' = w * g/sqrt(v+eps), b' = beta - mean * g/sqrt(v+eps)."""
        w = self.param(f"{cs.name}.conv.weight", (cs.c2, cs.c1, cs.k, cs.k))
        g, beta, mean, var = (self.param(f"{cs.name}.bn.{p}", (cs.c2,))
                              for p in ("weight", "bias", "_mean", "_variance"))
        if np.any(var + self.eps <= 0):
            raise CheckpointError(f"{cs.name}.bn._variance: negative running variance")
        scale = g / np.sqrt(var + self.eps)
        shift = beta - mean * scale
        if self.opts.bn_as_scale:
            layer = self.network.add_convolution_nd(x, cs.c2, (cs.k, cs.k), self.weights(w))
            layer.stride_nd = (cs.s, cs.s)
            layer.padding_nd = (cs.p, cs.p)
            y = self.out(layer, f"{cs.name}.conv")
        else:
            y = self.conv_layer(x, cs.name, w * scale[:, None, None, None], shift, cs.s, cs.p, f"{cs.name}.conv")
        if self.opts.bn_as_scale:
            bn = self.network.add_scale(y, self.trt.ScaleMode.CHANNEL, shift=self.weights(shift),
                                        scale=self.weights(scale))
            y = self.out(bn, f"{cs.name}.bn")
        return self.silu(y, cs.name)

    def conv_layer(self, x, name: str, kernel: np.ndarray, bias: np.ndarray, s: int, p: int, out_name: str):
        """A conv with float kernel and bias; with INT8 scales for it, Q/DQ on its input and kernel."""
        c_out, k = kernel.shape[0], kernel.shape[2]
        q, steps = self.opts.int8.take(name, kernel, s, p) if self.opts.int8 is not None else (None, 0)
        if q is None or not q.quantized:
            layer = self.network.add_convolution_nd(
                input=x, num_output_maps=c_out, kernel_shape=(k, k), kernel=self.weights(kernel),
                bias=self.weights(bias))
        else:
            kernel_q = self.int8_kernel(q, steps)
            xq = self.qdq(x, np.float32(q.input_scale), f"{name}.input")
            wq = self.qdq(self.constant(kernel_q, f"{name}.weight"), q.weight_scales, f"{name}.weight", axis=0)
            layer = self.network.add_convolution_nd(
                input=xq, num_output_maps=c_out, kernel_shape=(k, k), kernel=self.trt.Weights(),
                bias=self.weights(bias))
            layer.set_input(1, wq)           # the kernel as a tensor: the dequantized INT8 kernel
        layer.stride_nd = (s, s)
        layer.padding_nd = (p, p)
        return self.out(layer, out_name)

    def int8_kernel(self, q, steps: int) -> np.ndarray:
        """PaddleSlim's integer kernel x its scales: TensorRT's Q gives those integers back. (Our
        own folded kernel quantizes to them but for ``steps`` values one step off: qdq_scales.take.)"""
        self.weight_flips += steps
        return (q.weight_q.astype(np.float32) * q.weight_scales.reshape(-1, 1, 1, 1)).astype(np.float32)

    def qdq(self, x, scale, name: str, axis: Optional[int] = None):
        """IQuantizeLayer (INT8, zero point 0) then IDequantizeLayer with the same constant scale."""
        s = self.constant(np.asarray(scale, np.float32), f"{name}.scale", dtype=np.float32)
        q = self.network.add_quantize(x, s)
        if axis is not None:
            q.axis = axis
        dq = self.network.add_dequantize(self.out(q, f"{name}.quantize"), s)
        if axis is not None:
            dq.axis = axis
        return self.out(dq, f"{name}.dequantize")

    @emits("C3")
    def c3(self, r: ResolvedLayer, xs):
        x = xs[0]
        a = self.conv(x, r.convs["cv1"])
        for j in range(r.bottlenecks):
            y = self.conv(self.conv(a, r.convs[f"m.{j}.cv1"]), r.convs[f"m.{j}.cv2"])
            if C3Type.adds(r, j):
                y = self.elementwise(a, y, self.trt.ElementWiseOperation.SUM, f"{r.name}.m.{j}.add")
            a = y
        b = self.conv(x, r.convs["cv2"])
        return self.conv(self.concat([a, b], f"{r.name}.cat"), r.convs["cv3"])

    @emits("SPPF")
    def sppf(self, r: ResolvedLayer, xs):
        k = r.spec.pool
        x = self.conv(xs[0], r.convs["cv1"])
        ys = [x]
        for i in range(3):
            pool = self.network.add_pooling_nd(ys[-1], self.trt.PoolingType.MAX, (k, k))
            pool.stride_nd = (1, 1)
            pool.padding_nd = (k // 2, k // 2)
            ys.append(self.out(pool, f"{r.name}.m.{i}"))
        return self.conv(self.concat(ys, f"{r.name}.cat"), r.convs["cv2"])

    @emits("Upsample")
    def upsample(self, r: ResolvedLayer, xs):
        """Nearest x s: out[i] = in[floor(i / s)], as Paddle's interpolate(mode='nearest')."""
        s = float(r.spec.scale)
        rs = self.network.add_resize(xs[0])
        rs.resize_mode = self.trt.InterpolationMode.NEAREST
        rs.coordinate_transformation = self.trt.ResizeCoordinateTransformation.ASYMMETRIC
        rs.nearest_rounding = self.trt.ResizeRoundMode.FLOOR
        rs.selector_for_single_pixel = self.trt.ResizeSelector.FORMULA
        rs.scales = [1.0, 1.0, s, s]
        return self.out(rs, f"{r.name}.resize")

    @emits("Concat")
    def concat_block(self, r: ResolvedLayer, xs):
        return self.concat(xs, f"{r.name}.cat")

    def concat(self, xs: Sequence[Any], name: str):
        cat = self.network.add_concatenation(list(xs))
        cat.axis = 1            # the default is rank-3, which is 1 only for 4-D tensors
        return self.out(cat, name)

    def shuffle(self, x, name: str, reshape: Optional[Sequence[int]] = None,
                second: Optional[Sequence[int]] = None):
        sh = self.network.add_shuffle(x)
        if reshape is not None:
            sh.reshape_dims = tuple(reshape)
        if second is not None:
            sh.second_transpose = tuple(second)
        return self.out(sh, name)

    @emits("Detect")
    def detect(self, r: ResolvedLayer, xs: Sequence[Any]):
        """1x1 convs, then the ultralytics decode on [B, na, ny, nx, no]:
        xy = (2*sig + grid - 0.5) * stride, wh = (2*sig)^2 * anchor, rest = sig.
        Done with broadcast constants and masks so no slice needs the (maybe dynamic) batch:
        out = (2y + G) * S + (2y)^2 * A + y * M, each term zero outside its channels."""
        net, trt = self.net, self.trt
        na, no = net.na, net.no
        h, w = self.opts.img_size
        anchors = np.asarray(net.anchors, np.float64).reshape(-1, na, 2)
        outs = []
        for i, (c_in, c_out) in enumerate(r.detect):
            name = f"{r.name}.m.{i}"
            wt = self.param(f"{name}.weight", (c_out, c_in, 1, 1))
            bias = self.param(f"{name}.bias", (c_out,))
            y = self.conv_layer(xs[i], name, wt, bias, 1, 0, name)
            if self.opts.fp16_graph:     # the decode runs in FP32: half spacing is 0.5 px at 700 px
                y = self.out(self.network.add_cast(y, trt.float32), f"{name}.to_float")
            stride = int(net.strides[i])
            ny, nx = h // stride, w // stride
            y = self.shuffle(y, f"{name}.to_bahwc", reshape=(0, na, no, ny, nx), second=(0, 1, 3, 4, 2))
            y = self.out(self.network.add_activation(y, trt.ActivationType.SIGMOID), f"{name}.sigmoid")

            gy, gx = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
            grid = np.zeros((1, 1, ny, nx, no))
            grid[..., 0], grid[..., 1] = gx - 0.5, gy - 0.5
            scale_xy = np.zeros((1, 1, 1, 1, no))
            scale_xy[..., :2] = stride
            anchor = np.zeros((1, na, 1, 1, no))
            anchor[0, :, 0, 0, 2:4] = anchors[i]
            keep = np.zeros((1, 1, 1, 1, no))
            keep[..., 4:] = 1.0

            prod, add = trt.ElementWiseOperation.PROD, trt.ElementWiseOperation.SUM
            c = self.decode_constant
            two = c(np.full((1, 1, 1, 1, 1), 2.0), f"{name}.two")
            y2 = self.elementwise(y, two, prod, f"{name}.y2")
            xy = self.elementwise(self.elementwise(y2, c(grid, f"{name}.grid"), add, f"{name}.xy0"),
                                  c(scale_xy, f"{name}.stride"), prod, f"{name}.xy")
            wh = self.elementwise(self.elementwise(y2, y2, prod, f"{name}.wh0"),
                                  c(anchor, f"{name}.anchor_grid"), prod, f"{name}.wh")
            rest = self.elementwise(y, c(keep, f"{name}.keep"), prod, f"{name}.rest")
            dec = self.elementwise(self.elementwise(xy, wh, add, f"{name}.xywh"), rest, add, f"{name}.decoded")
            outs.append(self.shuffle(dec, f"{name}.flat", reshape=(0, -1, no)))
        return self.concat(outs, f"{r.name}.cat")

    def nms(self, pred, nc: int, o: NMSOptions):
        """(backend, output tensors): INMSLayer where the network has add_nms, else EfficientNMS_TRT."""
        if o.backend not in ("auto", "layer", "plugin"):
            raise ValueError(f"NMS backend must be auto, layer or plugin, got {o.backend!r}")
        has_layer = hasattr(self.network, "add_nms")
        if o.backend == "layer" and not has_layer:
            raise RuntimeError("this TensorRT has no INetworkDefinition.add_nms (INMSLayer): use the plugin")
        if o.backend == "plugin" or not has_layer or (o.backend == "auto" and o.class_agnostic):
            return "plugin", self.nms_plugin(pred, nc, o)
        return "layer", self.nms_layer(pred, nc, o)

    def _nms_inputs(self, pred, nc: int):
        """Boxes [B,N,4] (cx,cy,w,h) and scores = obj * cls [B,N,nc], by gathers with constant
        indices (which work with a dynamic batch)."""
        def pick(idx, name):
            ind = self.constant(np.asarray(idx), f"nms.{name}.idx", dtype=np.int32)
            return self.out(self.network.add_gather(pred, ind, 2), f"nms.{name}")

        boxes, obj, cls = pick([0, 1, 2, 3], "boxes"), pick([4], "obj"), pick(list(range(5, 5 + nc)), "cls")
        return boxes, self.elementwise(cls, obj, self.trt.ElementWiseOperation.PROD, "nms.scores")

    def nms_layer(self, pred, nc: int, o: NMSOptions):
        """INMSLayer on corner boxes (x1,y1,x2,y2 = cx,cy -+ w,h / 2), then the kept rows' boxes and
        scores by ND gathers. Class-agnostic NMS: one score column, the max over classes, whose
        class is not known to the layer; so agnostic needs the plugin."""
        trt = self.trt
        if o.class_agnostic:
            raise ValueError("class-agnostic NMS inside the engine needs the EfficientNMS_TRT plugin "
                             "(--nms-backend plugin): INMSLayer suppresses per class")
        boxes, scores = self._nms_inputs(pred, nc)

        def take(t, idx, name, axis):
            ind = self.constant(np.asarray(idx), f"nms.{name}.idx", dtype=np.int32)
            return self.out(self.network.add_gather(t, ind, axis), f"nms.{name}")

        c = self.decode_constant
        centre = take(boxes, [0, 1, 0, 1], "centre", 2)
        size = take(boxes, [2, 3, 2, 3], "size", 2)
        half = self.elementwise(size, c(np.array([[[-0.5, -0.5, 0.5, 0.5]]]), "nms.half"),
                                trt.ElementWiseOperation.PROD, "nms.half_size")
        corners = self.elementwise(centre, half, trt.ElementWiseOperation.SUM, "nms.corners")
        per_class = self.constant(np.array(int(o.max_output_boxes), np.int32), "nms.max_per_class",
                                  dtype=np.int32)
        iou = c(np.array(float(o.iou_threshold)), "nms.iou_threshold")
        score = c(np.array(float(o.score_threshold)), "nms.score_threshold")
        layer = self.network.add_nms(corners, scores, per_class)
        layer.bounding_box_format = trt.BoundingBoxFormat.CORNER_PAIRS
        layer.topk_box_limit = NMS_TOPK
        layer.set_input(3, iou)
        layer.set_input(4, score)
        layer.name = "nms.layer"
        sel = layer.get_output(0)                       # [M, 3]: (image, class, box)
        gather_nd = trt.GatherMode.ND
        img_box = take(sel, [0, 2], "image_box", 1)
        img_box_cls = take(sel, [0, 2, 1], "image_box_class", 1)
        det_boxes = self.out(self.network.add_gather_v2(corners, img_box, gather_nd), "nms.kept_boxes")
        det_scores = self.out(self.network.add_gather_v2(scores, img_box_cls, gather_nd), "nms.kept_scores")
        return [sel, det_boxes, det_scores]

    def nms_plugin(self, pred, nc: int, o: NMSOptions):
        """EfficientNMS_TRT v1 on boxes [B,N,4] (cx,cy,w,h) and scores [B,N,nc]."""
        trt = self.trt
        boxes, scores = self._nms_inputs(pred, nc)

        def field(name, value, kind):
            if kind == "f":
                return trt.PluginField(name, np.array([value], np.float32), trt.PluginFieldType.FLOAT32)
            return trt.PluginField(name, np.array([value], np.int32), trt.PluginFieldType.INT32)

        fields = trt.PluginFieldCollection([
            field("background_class", -1, "i"), field("max_output_boxes", int(o.max_output_boxes), "i"),
            field("score_threshold", float(o.score_threshold), "f"),
            field("iou_threshold", float(o.iou_threshold), "f"),
            field("score_activation", 0, "i"), field("class_agnostic", int(o.class_agnostic), "i"),
            field("box_coding", 1, "i")])    # 1 = BoxCenterSize (cx, cy, w, h)
        registry = trt.get_plugin_registry()
        creator = registry.get_creator("EfficientNMS_TRT", "1", "")
        if creator is None:
            raise RuntimeError("EfficientNMS_TRT version 1 is not registered: call "
                               "trt.init_libnvinfer_plugins(logger, '') first, and check that "
                               "libnvinfer_plugin is installed")
        v3 = getattr(trt, "IPluginCreatorV3One", None)
        if v3 is not None and isinstance(creator, v3):      # a TensorRT that ships it as a V3 plugin
            creator_v3 = creator
            plugin = creator_v3.create_plugin("nms", fields, trt.TensorRTPhase.BUILD)
            layer = self.network.add_plugin_v3([boxes, scores], [], plugin)
        else:
            plugin = creator.create_plugin("nms", fields)
            layer = self.network.add_plugin_v2([boxes, scores], plugin)
        layer.name = "nms.efficient_nms"
        return [layer.get_output(i) for i in range(4)]


def _img_hw(img_size: Union[int, Sequence[int]], net: NetSpec) -> Tuple[int, int]:
    h, w = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    m = max(net.strides)
    if h <= 0 or w <= 0 or h % m or w % m:
        raise ValueError(f"image size {h}x{w} must be positive multiples of the largest stride {m}")
    return int(h), int(w)


def build_network(network, trt, state: Mapping[str, np.ndarray], meta: ModelMeta,
                  opts: Optional[BuildOptions] = None) -> BuiltNetwork:
    """Add the whole YOLOv5 of ``state`` to ``network``; mark its outputs.

    ``network``: an empty INetworkDefinition (explicit batch; created STRONGLY_TYPED when
    ``opts.fp16_graph``) or a NumpyNetwork. ``trt``: the module its enums come from.
    Output (no NMS): ``output`` [B, N, 5+nc] float32 = the Paddle model's eval output.
    With NMS by INMSLayer: nms_indices [M,3] int32 (image, class, box), nms_boxes [M,4] x1y1x2y2
    float32, nms_scores [M] float32 (M known after execution). By EfficientNMS_TRT:
    num_detections [B,1] int32, detection_boxes [B,K,4] x1y1x2y2 float32, detection_scores [B,K]
    float32, detection_classes [B,K] int32.
    """
    net = netspec_for(meta)
    opts = opts or BuildOptions()
    if opts.int8 is not None and (opts.fp16_graph or opts.bn_as_scale or opts.float64_weights):
        raise ValueError("INT8 (explicit Q/DQ) is built on the FP32 graph with BN folded: not with FP16, "
                         "--bn-as-scale or float64 weights")
    opts = replace(opts, img_size=_img_hw(opts.img_size, net))
    if opts.int8 is not None:     # a fresh record of which conv took which scales
        opts = replace(opts, int8=replace(opts.int8, used={}))
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    layers = resolve(net, shapes)                      # channel counts from the weights
    e = _Emitter(network, trt, state, net, opts)

    h, w = opts.img_size
    batch = -1 if opts.dynamic_batch else int(opts.batch)
    if batch == 0 or batch < -1:
        raise ValueError(f"batch must be >= 1 (or dynamic), got {batch}")
    images = network.add_input(name=INPUT_NAME, dtype=trt.float32, shape=(batch, 3, h, w))
    x = images
    if opts.fp16_graph:     # strongly typed: the graph runs in half, I/O stays float32
        x = e.out(network.add_cast(images, trt.float16), "input.to_half")

    saved: Dict[int, Any] = {-2: x}
    for r in layers:
        emit = EMITTERS.get(r.spec.block)
        if emit is None:
            raise NotImplementedError(f"{r.name}: no TensorRT emitter for block {r.spec.block!r}; add one "
                                      "to ppyolo_slim/deploy/builder.py with @emits, as its Paddle layer has "
                                      "@paddle_layer")
        saved[r.spec.index] = emit(e, r, [saved[s] for s in r.spec.src])
    pred = saved[layers[-1].spec.index]

    nms_backend = None
    if opts.nms is None:
        results = [(OUTPUT_NAME, pred)]
    else:
        nms_backend, nmsd = e.nms(pred, net.nc, opts.nms)
        names = NMS_OUTPUTS if nms_backend == "plugin" else NMS_LAYER_OUTPUTS
        results = list(zip(names, nmsd))
    int8 = None
    if opts.int8 is not None:
        opts.int8.finish()
        q = [n for n, c in zip(opts.int8.used, opts.int8.convs) if c.quantized]
        int8 = {"scales": opts.int8.source, "method": opts.int8.method, "quantized_convs": len(q),
                "float_convs": [n for n in opts.int8.used if n not in q], "weight_flips": e.weight_flips,
                "onnx_convs": dict(opts.int8.used)}
    detect = layers[-1].name
    heads = {f"{detect}.m.{i}" for i in range(len(layers[-1].detect))}
    decode = [network.get_layer(i).name for i in range(network.num_layers)]
    decode = [n for n in decode if (n.startswith(detect + ".") and n not in heads) or n.startswith("nms.")]
    outputs = []
    for name, t in results:       # float outputs are float32 in the FP16 graph too (decode in FP32)
        t.name = name
        network.mark_output(t)
        outputs.append((name, tuple(t.shape)))
    return BuiltNetwork(INPUT_NAME, (batch, 3, h, w), outputs, meta.nc, list(meta.names),
                        network.num_layers, e.keep, nms_backend, int8, decode)
