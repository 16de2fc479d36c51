"""The stand-in's plugin registry and EfficientNMS_TRT (see numpy_net.py)."""
from __future__ import annotations

import numpy as np

from .numpy_core import DataType, ILayer, NetworkDefinitionError, PluginFieldType, _api


class PluginField:
    @_api("PluginField")
    def __init__(self, name: str = "", data=None, type: PluginFieldType = PluginFieldType.UNKNOWN):
        self.name, self.data, self.type = name, np.asarray(data), type


class PluginFieldCollection(list):
    @_api("PluginFieldCollection")
    def __init__(self, fields=()):
        super().__init__(fields)


class EfficientNMSPlugin:
    """EfficientNMS_TRT (version 1) as NVIDIA's plugin README and kernels describe it.

    Inputs: boxes [B, N, 4] (or [B, N, 1, 4]) and scores [B, N, C]. Candidates are the
    (box, class) pairs with score >= score_threshold (background class skipped), sorted by
    score (ties keep input order: box-major, class-minor), the best 5000 kept; a candidate
    is dropped when its IoU with an already kept one of the same class (any class when
    class_agnostic) is >= iou_threshold. Outputs, zero-filled past num_detections:
    num_detections [B,1] int32, detection_boxes [B,K,4] (x1,y1,x2,y2 whatever the input
    coding), detection_scores [B,K], detection_classes [B,K] int32.
    """
    NUM_SELECTED = 5000      # candidates kept after the score threshold, per image
    _FIELDS = {"score_threshold": float, "iou_threshold": float, "max_output_boxes": int,
               "background_class": int, "score_activation": int, "class_agnostic": int,
               "box_coding": int}

    def __init__(self, name: str, fields: PluginFieldCollection):
        self.name = name
        self.params = dict(score_threshold=0.5, iou_threshold=0.5, max_output_boxes=100,
                           background_class=-1, score_activation=0, class_agnostic=0, box_coding=0)
        for f in fields:
            if f.name not in self._FIELDS:
                raise NetworkDefinitionError(f"EfficientNMS_TRT has no field {f.name!r}")
            want = PluginFieldType.FLOAT32 if self._FIELDS[f.name] is float else PluginFieldType.INT32
            if f.type != want or f.data.size != 1:
                raise NetworkDefinitionError(f"EfficientNMS_TRT field {f.name!r} must be one {want.name}")
            self.params[f.name] = self._FIELDS[f.name](f.data.reshape(-1)[0])

    def infer(self, shapes, dtypes):
        (b, n, *_), (_, _, c) = shapes
        if len(shapes[0]) not in (3, 4) or shapes[0][-1] != 4:
            raise NetworkDefinitionError(f"EfficientNMS_TRT boxes must be [B, N, 4], got {shapes[0]}")
        if shapes[1][:2] != shapes[0][:2]:
            raise NetworkDefinitionError(f"EfficientNMS_TRT boxes {shapes[0]} and scores {shapes[1]} disagree")
        k = self.params["max_output_boxes"]
        return [((b, 1), DataType.INT32), ((b, k, 4), dtypes[0]), ((b, k), dtypes[1]),
                ((b, k), DataType.INT32)]

    def execute(self, boxes: np.ndarray, scores: np.ndarray):
        p = self.params
        B, N, C = scores.shape
        boxes = boxes.reshape(B, N, 4).astype(np.float32)
        sc = scores.astype(np.float32)
        if p["box_coding"] == 1:     # BoxCenterSize -> BoxCorner
            cx, cy, w, h = np.moveaxis(boxes, -1, 0)
            boxes = np.stack([cx - w * 0.5, cy - h * 0.5, cx + w * 0.5, cy + h * 0.5], -1)
        K = p["max_output_boxes"]
        num = np.zeros((B, 1), np.int32)
        out_b = np.zeros((B, K, 4), np.float32)
        out_s = np.zeros((B, K), np.float32)
        out_c = np.zeros((B, K), np.int32)
        thr = p["score_threshold"]
        for b in range(B):
            s = sc[b].reshape(-1)                     # element index = box * C + class
            test = 1 / (1 + np.exp(-s)) if p["score_activation"] else s
            keep = np.nonzero(test >= thr)[0]
            if p["background_class"] >= 0:
                keep = keep[keep % C != p["background_class"]]
            order = keep[np.argsort(-s[keep], kind="stable")][:self.NUM_SELECTED]
            cand_box = boxes[b, order // C]
            cand_cls = order % C
            alive = np.ones(len(order), bool)
            n_out = 0
            for i in range(len(order)):
                if not alive[i]:
                    continue
                if n_out >= K:
                    break
                out_b[b, n_out] = cand_box[i]
                out_s[b, n_out] = test[order[i]]
                out_c[b, n_out] = cand_cls[i]
                n_out += 1
                rest = np.arange(i + 1, len(order))
                if not p["class_agnostic"]:
                    rest = rest[cand_cls[rest] == cand_cls[i]]
                rest = rest[alive[rest]]
                if len(rest):
                    alive[rest[_iou(cand_box[i], cand_box[rest]) >= p["iou_threshold"]]] = False
            num[b, 0] = n_out
        return [num, out_b, out_s, out_c]


def _iou(a: np.ndarray, bs: np.ndarray) -> np.ndarray:
    a = np.array([min(a[0], a[2]), min(a[1], a[3]), max(a[0], a[2]), max(a[1], a[3])])
    bs = np.stack([np.minimum(bs[:, 0], bs[:, 2]), np.minimum(bs[:, 1], bs[:, 3]),
                   np.maximum(bs[:, 0], bs[:, 2]), np.maximum(bs[:, 1], bs[:, 3])], 1)
    iw = np.clip(np.minimum(a[2], bs[:, 2]) - np.maximum(a[0], bs[:, 0]), 0, None)
    ih = np.clip(np.minimum(a[3], bs[:, 3]) - np.maximum(a[1], bs[:, 1]), 0, None)
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (bs[:, 2] - bs[:, 0]) * (bs[:, 3] - bs[:, 1]) - inter
    return np.where((inter > 0) & (union > 0), inter / np.where(union > 0, union, 1), 0.0)


class IPluginCreator:
    """The V2 creator TensorRT 10 returns for EfficientNMS_TRT version 1."""
    _PLUGINS = {("EfficientNMS_TRT", "1"): EfficientNMSPlugin}

    def __init__(self, name, version):
        self.name, self.plugin_version, self.plugin_namespace = name, version, ""

    @_api("IPluginCreator")
    def create_plugin(self, name: str, field_collection: PluginFieldCollection):
        return self._PLUGINS[(self.name, self.plugin_version)](name, field_collection)


class IPluginCreatorV3One:  # never returned by the stand-in; here so isinstance() checks work
    pass


class IPluginRegistry:
    @_api("IPluginRegistry")
    def get_creator(self, type: str, version: str, plugin_namespace: str = ""):
        if (type, version) in IPluginCreator._PLUGINS and plugin_namespace == "":
            return IPluginCreator(type, version)
        return None

    @_api("IPluginRegistry")
    def get_plugin_creator(self, type: str, version: str, plugin_namespace: str = ""):
        return self.get_creator(type, version, plugin_namespace)


_REGISTRY = IPluginRegistry()


@_api("<module>")
def get_plugin_registry() -> IPluginRegistry:
    return _REGISTRY


@_api("<module>")
def init_libnvinfer_plugins(logger, namespace: str) -> bool:
    return True


class IPluginV2Layer(ILayer):
    _TRT_CLASS = "IPluginV2Layer"
    _N_OUT = 4

    def __init__(self, network, inputs, plugin):
        super().__init__(network, inputs)
        object.__setattr__(self, "plugin", plugin)

    def _infer(self):
        return self.plugin.infer([t.shape for t in self._inputs], [t.dtype for t in self._inputs])

    def _run(self, xs):
        outs = self.plugin.execute(*xs)
        return [self._store(o, dt) for o, (_, dt) in zip(outs, self._inferred())]
