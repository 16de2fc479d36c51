"""ONNX from the Paddle inference model (paddle2onnx 1.3.1), made to look like
ultralytics' YOLOv5 export, and an optional NMS tail built from standard ONNX ops.

What ``finalize`` does to paddle2onnx's graph, and why:
- the output is renamed ``output0`` and the batch axis ``batch`` (ultralytics' names), so
  consumers of YOLOv5 ONNX files (ultralytics' DetectMultiBackend, OpenCV DNN samples,
  tensorrtx-style tools) find what they expect;
- weights move from ``Constant`` nodes (how paddle2onnx 1.3.1 stores them) to graph
  initializers, where tools that edit, quantise or display weights look;
- ``metadata_props`` carry ``stride`` and ``names`` written as ultralytics writes them
  (``str(dict)``), plus our own record under ``ppyolo_slim``.
"""
from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

INPUT_NAME = "images"
RAW_OUTPUT = "output0"
NMS_OUTPUT = "detections"
BATCH_DIM = "batch"
MIN_NMS_OPSET = 11   # NonMaxSuppression with GatherND and TopK(largest=0)


class OnnxExportError(RuntimeError):
    pass


def paddle_to_onnx(model_file: str, params_file: str, opset: int) -> bytes:
    """paddle2onnx's conversion of a jit.save'd model, as serialised ONNX bytes."""
    import paddle2onnx
    try:
        data = paddle2onnx.export(model_file, params_file, save_file=None, opset_version=int(opset),
                                  auto_upgrade_opset=False, verbose=False, enable_onnx_checker=True)
    except Exception as e:   # the C++ converter raises plain RuntimeError / ValueError
        raise OnnxExportError(f"paddle2onnx {paddle2onnx.__version__} could not convert {model_file} "
                              f"at opset {opset}: {e}") from None
    if not data:
        raise OnnxExportError(f"paddle2onnx returned an empty model for {model_file} (opset {opset}); "
                              f"see its log above")
    return data


def _rename(graph, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]
    for v in list(graph.output) + list(graph.input) + list(graph.value_info):
        if v.name == old:
            v.name = new


def _set_batch_dim(value_info, batch: Optional[int]) -> None:
    dim = value_info.type.tensor_type.shape.dim[0]
    if batch:
        dim.dim_value = int(batch)
    else:
        dim.dim_param = BATCH_DIM


def constants_to_initializers(graph) -> int:
    """Move top-level ``Constant`` nodes holding a tensor into ``graph.initializer``."""
    keep, moved = [], 0
    for node in graph.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            t = node.attribute[0].t
            t.name = node.output[0]
            graph.initializer.append(t)
            moved += 1
        else:
            keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)
    return moved


def names_metadata(names: Sequence[str]) -> str:
    """``names`` as ultralytics writes it into ONNX metadata: ``str({0: 'a', 1: 'b'})``."""
    return str({i: str(n) for i, n in enumerate(names)})


def finalize(model_bytes: bytes, *, names: Sequence[str], img_size: int, batch: Optional[int],
             stride: int, record: Dict[str, Any]):
    """The ONNX ModelProto with ultralytics-style I/O names, initializers and metadata."""
    import onnx
    from .. import __version__
    model = onnx.load_from_string(model_bytes)
    g = model.graph
    if len(g.input) != 1 or len(g.output) != 1:
        raise OnnxExportError(f"paddle2onnx gave {len(g.input)} inputs and {len(g.output)} outputs; "
                              f"expected one of each")
    if g.input[0].name != INPUT_NAME:
        _rename(g, g.input[0].name, INPUT_NAME)
    _rename(g, g.output[0].name, RAW_OUTPUT)
    _set_batch_dim(g.input[0], batch)
    _set_batch_dim(g.output[0], batch)
    constants_to_initializers(g)
    g.name = "ppyolo_slim_yolov5"
    model.producer_name = "ppyolo_slim (paddle2onnx)"
    model.producer_version = __version__
    model.doc_string = "YOLOv5 exported by ppyolo_slim; see metadata 'ppyolo_slim' and infer_cfg.yml"
    meta = {"stride": str(int(stride)), "names": names_metadata(names),
            "imgsz": str([int(img_size), int(img_size)]), "batch": str(batch if batch else "dynamic"),
            "task": "detect", "ppyolo_slim": json.dumps(record, sort_keys=True)}
    del model.metadata_props[:]
    for k, v in meta.items():
        p = model.metadata_props.add()
        p.key, p.value = k, v
    return model


def opset_of(model) -> int:
    return max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


# ------------------------------------------------------------------------ NMS tail

def nms_tail(raw: str, nc: int, conf_thres: float, iou_thres: float, max_det: int,
             out: str = NMS_OUTPUT, prefix: str = "nms/") -> Tuple[list, list]:
    """(nodes, initializers): NMS on the raw ``[B, N, 5+nc]`` tensor ``raw`` into ``out``.

    Same semantics as ``engine.postprocess.non_max_suppression(multi_label=False)``:
    score = obj * best class prob, kept when > conf_thres, per-class greedy NMS
    dropping IoU > iou_thres, at most max_det rows per image. Output layout:
    inference_cfg.NMS_LAYOUT. Standard ONNX ops only (opset >= 11), run by ONNX Runtime;
    TensorRT's parser lacks some of them (Compress): the TensorRT path is deploy/ (EfficientNMS)."""
    from onnx import TensorProto, helper, numpy_helper
    if not 0 <= conf_thres < 1 or not 0 < iou_thres <= 1 or max_det < 1:
        raise ValueError(f"NMS needs 0 <= conf_thres < 1, 0 < iou_thres <= 1, max_det >= 1; got "
                         f"{conf_thres}, {iou_thres}, {max_det}")
    inits, nodes = [], []

    def const(name, value, dtype):
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), prefix + name))
        return prefix + name

    def node(op, inputs, n_out=1, **attrs):
        outs = [f"{prefix}{op.lower()}_{len(nodes)}_{k}" for k in range(n_out)]
        nodes.append(helper.make_node(op, list(inputs), outs, name=f"{prefix}{op}_{len(nodes)}", **attrs))
        return outs[0] if n_out == 1 else outs

    i64 = np.int64
    axis2 = const("axis2", [2], i64)

    def sl(start, end):
        return node("Slice", [raw, const(f"s{start}", [start], i64), const(f"e{end}", [end], i64), axis2])

    xy, wh = sl(0, 2), sl(2, 4)
    half = node("Mul", [wh, const("half", [0.5], np.float32)])
    boxes = node("Concat", [node("Sub", [xy, half]), node("Add", [xy, half])], axis=2)   # [B,N,4] xyxy
    scores = node("Mul", [sl(5, 5 + nc), sl(4, 5)])                                     # [B,N,nc]
    if nc > 1:   # keep the best class only (ties: lowest class id, as argmax)
        _, top_i = node("TopK", [scores, const("k1", [1], i64)], n_out=2, axis=-1)
        onehot = node("OneHot", [top_i, const("depth", [nc], i64), const("onoff", [0.0, 1.0], np.float32)],
                      axis=-1)                                                          # [B,N,1,nc]
        scores = node("Mul", [scores, node("Reshape", [onehot, const("bnc", [0, 0, nc], i64)])])
    scores_t = node("Transpose", [scores], perm=[0, 2, 1])                              # [B,nc,N]
    sel = node("NonMaxSuppression", [boxes, scores_t, const("max_det", [max_det], i64),
                                     const("iou", [iou_thres], np.float32),
                                     const("conf", [conf_thres], np.float32)],
               center_point_box=0)                                                      # [K,3] b,c,n
    b_idx = node("Gather", [sel, const("col0", [0], i64)], axis=1)                      # [K,1]
    c_idx = node("Gather", [sel, const("col1", [1], i64)], axis=1)
    bn = node("Gather", [sel, const("col02", [0, 2], i64)], axis=1)                     # [K,2]
    k_boxes = node("GatherND", [boxes, bn])                                             # [K,4]
    k_scores = node("Reshape", [node("GatherND", [scores_t, sel]), const("col", [-1, 1], i64)])
    b_f = node("Cast", [b_idx], to=TensorProto.FLOAT)
    det = node("Concat", [b_f, k_boxes, k_scores, node("Cast", [c_idx], to=TensorProto.FLOAT)], axis=1)
    # order rows by batch index, then score (best first): key = 2*b - score, ascending
    key = node("Reshape", [node("Sub", [node("Mul", [b_f, const("two", [2.0], np.float32)]), k_scores]),
                           const("flat", [-1], i64)])
    k_shape = node("Shape", [key])                                                      # [1] = K
    _, order = node("TopK", [key, k_shape], n_out=2, axis=0, largest=0, sorted=1)
    det = node("Gather", [det, order], axis=0)
    # at most max_det rows per image: rank within the image = row - first row of its batch index
    b_sorted = node("Cast", [node("Gather", [b_idx, order], axis=0)], to=TensorProto.INT64)   # [K,1]
    b_sorted = node("Reshape", [b_sorted, const("flat2", [-1], i64)])                       # [K]
    n_img = node("Slice", [node("Shape", [raw]), const("z", [0], i64), const("one", [1], i64)])  # [1] = B
    onehot_b = node("OneHot", [b_sorted, n_img, const("onoff_b", [0.0, 1.0], np.float32)], axis=-1)  # [K,B]
    ones = node("ConstantOfShape", [node("Concat", [const("one_", [1], i64), k_shape], axis=0)],
                value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0]))            # [1,K]
    per_img = node("Reshape", [node("MatMul", [ones, onehot_b]), const("flat3", [-1], i64)])  # [B] rows each
    first = node("Gather", [node("CumSum", [per_img, const("ax0", 0, i64)], exclusive=1), b_sorted], axis=0)
    k_scalar = node("Cast", [node("Reshape", [k_shape, const("scalar", [], i64)])], to=TensorProto.FLOAT)
    row = node("Range", [const("f0", 0.0, np.float32), k_scalar, const("f1", 1.0, np.float32)])  # [K]
    keep = node("Less", [node("Sub", [row, first]), const("maxdet_f", [max_det - 0.5], np.float32)])
    nodes.append(helper.make_node("Compress", [det, keep], [out], name=prefix + "Compress_max_det", axis=0))
    return nodes, inits


def append_nms(model, nc: int, conf_thres: float, iou_thres: float, max_det: int) -> None:
    """Add the NMS tail to ``model`` in place; outputs become [detections, output0]."""
    from onnx import TensorProto, helper
    if opset_of(model) < MIN_NMS_OPSET:
        raise OnnxExportError(f"--nms needs opset >= {MIN_NMS_OPSET} (NonMaxSuppression, GatherND), "
                              f"got opset {opset_of(model)}")
    g = model.graph
    nodes, inits = nms_tail(RAW_OUTPUT, nc, conf_thres, iou_thres, max_det)
    g.node.extend(nodes)
    g.initializer.extend(inits)
    raw_vi = g.output[0]
    det_vi = helper.make_tensor_value_info(NMS_OUTPUT, TensorProto.FLOAT, ["num_detections", 7])
    outputs: List[Any] = [det_vi, raw_vi]
    del g.output[:]
    g.output.extend(outputs)


def nms_model(nc: int, conf_thres: float, iou_thres: float, max_det: int, opset: int = 13):
    """A stand-alone ONNX model: raw ``[B,N,5+nc]`` in, NMS detections out (for tests and
    for users who keep NMS outside the detector graph)."""
    import onnx
    from onnx import TensorProto, helper
    if opset < MIN_NMS_OPSET:
        raise OnnxExportError(f"NMS needs opset >= {MIN_NMS_OPSET}, got {opset}")
    nodes, inits = nms_tail(RAW_OUTPUT, nc, conf_thres, iou_thres, max_det)
    graph = helper.make_graph(
        nodes, "yolov5_nms",
        [helper.make_tensor_value_info(RAW_OUTPUT, TensorProto.FLOAT, [BATCH_DIM, "anchors", 5 + nc])],
        [helper.make_tensor_value_info(NMS_OUTPUT, TensorProto.FLOAT, ["num_detections", 7])],
        initializer=inits)
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="ppyolo_slim")
    model.ir_version = helper.find_min_ir_version_for(opsets)   # readable by older runtimes
    onnx.checker.check_model(model)
    return model


def check_and_serialise(model) -> bytes:
    import onnx
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise OnnxExportError(f"the exported ONNX graph fails onnx.checker: {e}") from None
    return model.SerializeToString()
