"""A CPU stand-in for TensorRT's ``INetworkDefinition`` that executes the graph in NumPy.

The builder (``builder.py``) is handed either a real ``tensorrt`` module and network or
this module and a :class:`NumpyNetwork`; it cannot tell them apart. The methods here
take the same argument names, in the same order, as the TensorRT 10 Python API, and the
layers follow TensorRT's documented semantics (output sizes, padding, pooling windows,
resize coordinate mapping and rounding, scale modes, elementwise broadcasting, shuffle
transpose/reshape with 0 and -1, concatenation's default axis, EfficientNMS_TRT's
output layout, INT8 quantize/dequantize in numpy_quant.py). Every API call and layer
attribute set is recorded in :data:`API_LOG`, so a test can check each one against the real API's signatures (tensorrt-stubs).

Only what the builder needs is implemented; anything else raises NotImplementedError
rather than guessing. Half-precision tensors are emulated by computing in float32 and
rounding each layer's output to float16 (TensorRT's FP16 kernels accumulate in FP32).

The pieces: numpy_core.py (enums, Weights, ITensor, ILayer), numpy_layers.py (the
layers), numpy_plugins.py (plugin registry, EfficientNMS_TRT); this module is the
``trt``-like namespace that gathers them, plus the network itself.
"""
from __future__ import annotations

import enum  # noqa: F401  (tests look for the Enum classes through this namespace)
from typing import Dict, List, Optional

import numpy as np

from .numpy_core import (API_LOG, CREATION_FLAG_VALUES, ActivationType, BoundingBoxFormat,  # noqa: F401
                         DataType, ElementWiseOperation, GatherMode, ILayer, ITensor, InterpolationMode,
                         LayerType, NetworkDefinitionCreationFlag, NetworkDefinitionError, PaddingMode,
                         PluginFieldType, PoolingType, ResizeCoordinateTransformation, ResizeRoundMode,
                         ResizeSelector, ScaleMode, TensorRTPhase, Weights, __version__, _api, _dims,
                         clear_api_log, creation_flag_enum, float16, float32, int8, int32, int64, nptype,
                         uint8)
from .numpy_layers import (IActivationLayer, ICastLayer, IConcatenationLayer, IConstantLayer,  # noqa: F401
                           IConvolutionLayer, IElementWiseLayer, IGatherLayer, INMSLayer, IPoolingLayer,
                           IResizeLayer, IScaleLayer, IShuffleLayer)
from .numpy_quant import IDequantizeLayer, IQuantizeLayer  # noqa: F401
from .numpy_plugins import (EfficientNMSPlugin, IPluginCreator, IPluginCreatorV3One,  # noqa: F401
                            IPluginRegistry, IPluginV2Layer, PluginField, PluginFieldCollection,
                            get_plugin_registry, init_libnvinfer_plugins)

# ---------------------------------------------------------------------------- network
class NumpyNetwork:
    """INetworkDefinition with TensorRT's argument names; ``run`` executes it in NumPy."""
    _TRT_CLASS = "INetworkDefinition"

    def __init__(self, flags: int = 0, float64: bool = False, major: int = 10):
        """``float64``: run FLOAT tensors in double precision (outputs still come back as
        float32), so a comparison measures the other side's rounding, not this one's.
        ``major``: the TensorRT version whose flag bits ``flags`` uses."""
        self._float64 = float64
        self._layers: List[ILayer] = []
        self._inputs: List[ITensor] = []
        self._outputs: List[ITensor] = []
        bits = CREATION_FLAG_VALUES[major]
        unknown = flags & ~sum(1 << v for v in bits.values())
        if unknown:
            raise NetworkDefinitionError(f"create_network flags {flags:#x}: bits {unknown:#x} are no "
                                         f"NetworkDefinitionCreationFlag of TensorRT {major}")
        self._strongly_typed = bool(flags & (1 << bits["STRONGLY_TYPED"]))
        self._version = 0
        self.name = "numpy_network"

    # -- graph construction (TensorRT 10 names and argument order)
    def _add(self, layer: ILayer) -> ILayer:
        if not self._float64:
            for what in ("kernel", "bias", "weights", "shift", "scale", "power"):
                w = getattr(layer, what, None)
                if isinstance(w, np.ndarray) and w.dtype == np.float64:
                    raise NetworkDefinitionError(f"{layer.name}: {what} is float64, which TensorRT "
                                                 "weights cannot be (float32, float16, int8, int32, ...)")
        self._layers.append(layer)
        layer._on_add()
        return layer

    @_api("INetworkDefinition")
    def add_input(self, name: str, dtype: DataType, shape) -> ITensor:
        t = ITensor(self, None, 0, name, _dims(shape), dtype)
        self._inputs.append(t)
        return t

    @_api("INetworkDefinition")
    def mark_output(self, tensor: ITensor) -> None:
        if tensor in self._outputs:
            raise NetworkDefinitionError(f"{tensor.name!r} is already an output")
        self._outputs.append(tensor)

    @_api("INetworkDefinition")
    def add_convolution_nd(self, input, num_output_maps, kernel_shape, kernel, bias=None):
        return self._add(IConvolutionLayer(self, input, num_output_maps, kernel_shape, kernel, bias))

    @_api("INetworkDefinition")
    def add_pooling_nd(self, input, type, window_size):
        return self._add(IPoolingLayer(self, input, type, window_size))

    @_api("INetworkDefinition")
    def add_activation(self, input, type):
        return self._add(IActivationLayer(self, input, type))

    @_api("INetworkDefinition")
    def add_elementwise(self, input1, input2, op):
        return self._add(IElementWiseLayer(self, input1, input2, op))

    @_api("INetworkDefinition")
    def add_concatenation(self, inputs):
        if not inputs:
            raise NetworkDefinitionError("add_concatenation needs at least one input")
        return self._add(IConcatenationLayer(self, inputs))

    @_api("INetworkDefinition")
    def add_shuffle(self, input):
        return self._add(IShuffleLayer(self, input))

    @_api("INetworkDefinition")
    def add_resize(self, input):
        return self._add(IResizeLayer(self, input))

    @_api("INetworkDefinition")
    def add_scale(self, input, mode, shift=None, scale=None, power=None):
        return self._add(IScaleLayer(self, input, mode, shift, scale, power))

    @_api("INetworkDefinition")
    def add_scale_nd(self, input, mode, shift=None, scale=None, power=None, channel_axis=None):
        return self._add(IScaleLayer(self, input, mode, shift, scale, power, channel_axis))

    @_api("INetworkDefinition")
    def add_constant(self, shape, weights):
        return self._add(IConstantLayer(self, shape, weights))

    @_api("INetworkDefinition")
    def add_cast(self, input, to_type):
        return self._add(ICastLayer(self, input, to_type))

    @_api("INetworkDefinition")
    def add_gather(self, input, indices, axis):
        return self._add(IGatherLayer(self, input, indices, axis))

    @_api("INetworkDefinition")
    def add_gather_v2(self, input, indices, mode):
        return self._add(IGatherLayer(self, input, indices, 0, mode))

    @_api("INetworkDefinition")
    def add_nms(self, boxes, scores, max_output_boxes_per_class):
        return self._add(INMSLayer(self, boxes, scores, max_output_boxes_per_class))

    @_api("INetworkDefinition")
    def add_quantize(self, input, scale, output_type=DataType.INT8):
        return self._add(IQuantizeLayer(self, input, scale, output_type))

    @_api("INetworkDefinition")
    def add_dequantize(self, input, scale, output_type=DataType.FLOAT):
        return self._add(IDequantizeLayer(self, input, scale, output_type))

    @_api("INetworkDefinition")
    def add_plugin_v2(self, inputs, plugin):
        return self._add(IPluginV2Layer(self, inputs, plugin))

    @_api("INetworkDefinition")
    def get_input(self, index: int) -> ITensor:
        return self._inputs[index]

    @_api("INetworkDefinition")
    def get_output(self, index: int) -> ITensor:
        return self._outputs[index]

    @_api("INetworkDefinition")
    def get_layer(self, index: int) -> ILayer:
        return self._layers[index]

    @property
    def num_inputs(self) -> int:
        return len(self._inputs)

    @property
    def num_outputs(self) -> int:
        return len(self._outputs)

    @property
    def num_layers(self) -> int:
        return len(self._layers)

    # -- execution (not TensorRT API)
    def _np(self, dt: DataType):
        return np.float64 if (dt == DataType.FLOAT and self._float64) else nptype(dt)

    def _check_names(self) -> None:
        """TensorRT refuses to build a network with two layers of the same name."""
        seen = set()
        for layer in self._layers:
            if layer.name in seen:
                raise NetworkDefinitionError(f"repeated layer name {layer.name!r} (TensorRT's builder rejects it)")
            seen.add(layer.name)
        names = [t.name for t in self._inputs + self._outputs]
        if len(set(names)) != len(names):
            raise NetworkDefinitionError(f"network inputs/outputs need distinct names, got {names}")

    def run(self, feeds: Dict[str, np.ndarray], raw: bool = False,
            overrides: Optional[Dict[str, np.ndarray]] = None) -> Dict[str, np.ndarray]:
        """Execute on concrete inputs; returns every marked output by name (in its TensorRT
        type, or with ``raw`` as computed: float64 in a float64 network). ``overrides`` (tensor
        name -> value): the layers downstream read that value instead of the computed one, while
        a marked output still returns what was computed; so a check can feed each part of the
        graph another runtime's values and compare part by part."""
        overrides = overrides or {}
        computed: Dict[int, np.ndarray] = {}
        self._check_names()
        vals: Dict[int, np.ndarray] = {}
        for t in self._inputs:
            if t.name not in feeds:
                raise KeyError(f"no value fed for network input {t.name!r}")
            a = np.asarray(feeds[t.name])
            if a.ndim != len(t.shape) or any(d >= 0 and d != s for d, s in zip(t.shape, a.shape)):
                raise ValueError(f"input {t.name!r}: shape {a.shape} does not fit {t.shape}")
            vals[id(t)] = a.astype(self._np(t.dtype), copy=False)
        pending = list(self._layers)    # TensorRT orders layers by their inputs, not by when they were added
        while pending:
            ready = [layer for layer in pending if all(t is None or id(t) in vals for t in layer._inputs)]
            if not ready:
                layer = pending[0]
                t = next(t for t in layer._inputs if t is not None and id(t) not in vals)
                raise NetworkDefinitionError(f"{layer.name}: input {t.name!r} is never computed (a cycle, "
                                             "or a tensor of no layer)")
            for layer in ready:
                ins = [None if t is None else vals[id(t)] for t in layer._inputs]
                for t, y in zip(layer._outputs, layer._run(ins)):
                    if t.name in overrides:
                        computed[id(t)] = y
                        y = np.asarray(overrides[t.name]).astype(y.dtype, copy=False).reshape(y.shape)
                    vals[id(t)] = y
            pending = [layer for layer in pending if layer not in ready]
        missing = [t.name for t in self._outputs if id(t) not in vals]
        if missing:
            raise NetworkDefinitionError(f"outputs never computed: {missing}")
        vals.update(computed)
        if raw:
            return {t.name: vals[id(t)] for t in self._outputs}
        return {t.name: vals[id(t)].astype(nptype(t.dtype), copy=False) for t in self._outputs}


def create_network(flags: int = 0, float64: bool = False, major: int = 10) -> NumpyNetwork:
    """What ``trt.Builder(logger).create_network(flags)`` gives on a GPU machine."""
    return NumpyNetwork(flags, float64, major)
