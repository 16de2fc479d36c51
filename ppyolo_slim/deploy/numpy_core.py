"""The stand-in's foundations: TensorRT's enums, Weights, ITensor and the ILayer base.

Part of the NumPy stand-in for TensorRT's network API (``numpy_net.py`` is the
namespace the builder sees; it re-exports everything here). Every API call and layer /
tensor attribute set is recorded in :data:`API_LOG` for the API-signature test.
"""
from __future__ import annotations

import enum
import functools
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

__version__ = "10.13-numpy-standin"

# (TensorRT class name, member, positional count, keyword names): one entry per call or attribute set
API_LOG: List[Tuple[str, str, int, Tuple[str, ...]]] = []


def clear_api_log() -> None:
    API_LOG.clear()


def _api(owner: str):
    """Record each call as the TensorRT API would see it (method name, how it was passed)."""
    def wrap(fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            n_pos = len(args) - (0 if owner == "<module>" else 1)     # not counting self
            API_LOG.append((owner, fn.__name__, n_pos, tuple(sorted(kwargs))))
            return fn(*args, **kwargs)
        return inner
    return wrap


class NetworkDefinitionError(ValueError):
    """A layer TensorRT would reject (the message names the layer and what was wrong)."""


# ---------------------------------------------------------------------------- enums
class _TrtEnum(enum.Enum):
    """Like TensorRT's pybind enums: int() gives the value; no equality with other enums or ints."""

    def __int__(self):
        return self.value

    __index__ = __int__


class DataType(_TrtEnum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    FP8 = 6
    BF16 = 7
    INT64 = 8


# trt.float32 and friends (trt.bool is left out: it would shadow the builtin here)
float32, float16, int8, int32, int64, uint8 = (
    DataType.FLOAT, DataType.HALF, DataType.INT8, DataType.INT32, DataType.INT64, DataType.UINT8)

_NP = {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8,
       DataType.INT32: np.int32, DataType.INT64: np.int64, DataType.BOOL: np.bool_,
       DataType.UINT8: np.uint8}


def nptype(dt: DataType):
    return _NP[dt]


def _dtype_of(a: np.ndarray) -> DataType:
    if a.dtype == np.float64:   # only a float64 stand-in network accepts these (NumpyNetwork._add)
        return DataType.FLOAT
    for k, v in _NP.items():
        if a.dtype == v:
            return k
    raise NetworkDefinitionError(f"no TensorRT data type for numpy dtype {a.dtype}")


class ActivationType(_TrtEnum):
    RELU = 0
    SIGMOID = 1
    TANH = 2
    LEAKY_RELU = 3


class ElementWiseOperation(_TrtEnum):
    SUM = 0
    PROD = 1
    MAX = 2
    MIN = 3
    SUB = 4
    DIV = 5
    POW = 6


class PoolingType(_TrtEnum):
    MAX = 0
    AVERAGE = 1


class ScaleMode(_TrtEnum):
    UNIFORM = 0
    CHANNEL = 1
    ELEMENTWISE = 2


class InterpolationMode(_TrtEnum):
    NEAREST = 0
    LINEAR = 1
    CUBIC = 2


class ResizeCoordinateTransformation(_TrtEnum):
    ALIGN_CORNERS = 0
    ASYMMETRIC = 1
    HALF_PIXEL = 2


class ResizeRoundMode(_TrtEnum):
    HALF_UP = 0
    HALF_DOWN = 1
    FLOOR = 2
    CEIL = 3


class ResizeSelector(_TrtEnum):
    FORMULA = 0
    UPPER = 1


class PaddingMode(_TrtEnum):
    EXPLICIT_ROUND_DOWN = 0
    EXPLICIT_ROUND_UP = 1


class GatherMode(_TrtEnum):
    DEFAULT = 0
    ELEMENT = 1
    ND = 2


class BoundingBoxFormat(_TrtEnum):
    CORNER_PAIRS = 0
    CENTER_SIZES = 1


# NetworkDefinitionCreationFlag's values differ between majors: 10.13 from tensorrt-stubs;
# 11.x from the 11.x headers (EXPLICIT_BATCH removed and the rest renumbered: bit 1, which is
# STRONGLY_TYPED on 10, is PREFER_JIT_PYTHON_PLUGINS on 11). The 11.4 bindings wheel confirms the
# member names (no EXPLICIT_BATCH) but holds the values only in compiled code (deploy/README.md).
CREATION_FLAG_VALUES = {
    10: {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1, "PREFER_JIT_PYTHON_PLUGINS": 2, "PREFER_AOT_PYTHON_PLUGINS": 3},
    11: {"STRONGLY_TYPED": 0, "PREFER_JIT_PYTHON_PLUGINS": 1, "PREFER_AOT_PYTHON_PLUGINS": 2},
}


def creation_flag_enum(major: int = 10):
    """trt.NetworkDefinitionCreationFlag as TensorRT ``major`` defines it."""
    if major not in CREATION_FLAG_VALUES:
        raise ValueError(f"no NetworkDefinitionCreationFlag values known for TensorRT {major}")
    return _TrtEnum("NetworkDefinitionCreationFlag", CREATION_FLAG_VALUES[major])


NetworkDefinitionCreationFlag = creation_flag_enum(10)


class PluginFieldType(_TrtEnum):
    FLOAT16 = 0
    FLOAT32 = 1
    FLOAT64 = 2
    INT8 = 3
    INT16 = 4
    INT32 = 5
    CHAR = 6
    DIMS = 7
    UNKNOWN = 8


class TensorRTPhase(_TrtEnum):
    BUILD = 0
    RUNTIME = 1


class LayerType(_TrtEnum):
    CONVOLUTION = 0
    ACTIVATION = 2
    POOLING = 3
    SCALE = 5
    ELEMENTWISE = 7
    CONCATENATION = 9
    PLUGIN_V2 = 11
    SHUFFLE = 15
    CONSTANT = 19
    GATHER = 16
    RESIZE = 26
    CAST = 42
    PLUGIN_V3 = 46


# ---------------------------------------------------------------------------- weights
class Weights:
    """Holds a NumPy array, as trt.Weights(a) does (without copying)."""

    @_api("Weights")
    def __init__(self, a: Optional[np.ndarray] = None):
        self._array = np.ascontiguousarray(a) if a is not None else np.zeros(0, np.float32)

    def numpy(self) -> np.ndarray:
        return self._array

    @property
    def size(self) -> int:
        return int(self._array.size)

    @property
    def dtype(self) -> DataType:
        return _dtype_of(self._array)


def _as_weights(w, what: str, layer: str) -> Optional[np.ndarray]:
    if w is None:
        return None
    if isinstance(w, Weights):
        return w.numpy()
    if isinstance(w, np.ndarray):
        return np.ascontiguousarray(w)
    raise NetworkDefinitionError(f"{layer}: {what} must be trt.Weights or a numpy array, got {type(w).__name__}")


def _dims(d, n: Optional[int] = None, what: str = "dims") -> Tuple[int, ...]:
    t = tuple(int(v) for v in (d if isinstance(d, (tuple, list)) else tuple(d)))
    if n is not None and len(t) != n:
        raise NetworkDefinitionError(f"{what} must have {n} values, got {t}")
    return t


# ---------------------------------------------------------------------------- tensors
class ITensor:
    """A graph edge: its producer and output index; shape and dtype as TensorRT infers them."""

    def __init__(self, network: Any, producer: Optional["ILayer"], index: int,
                 name: str, shape: Optional[Tuple[int, ...]] = None, dtype: Optional[DataType] = None):
        self._network, self._producer, self._index = network, producer, index
        object.__setattr__(self, "name", name)
        self._shape, self._dtype = shape, dtype

    @property
    def shape(self) -> Tuple[int, ...]:
        if self._producer is None:
            return self._shape
        return self._producer._inferred()[self._index][0]

    @property
    def dtype(self) -> DataType:
        if self._producer is None:
            return self._dtype
        return self._producer._inferred()[self._index][1]

    def __setattr__(self, key, value):
        if not key.startswith("_"):
            API_LOG.append(("ITensor", key, -1, ()))
        object.__setattr__(self, key, value)

    def is_network_input(self) -> bool:
        return self._producer is None

    def is_network_output(self) -> bool:
        return self in self._network._outputs

    def __repr__(self):
        return f"ITensor({self.name!r}, shape={self.shape}, dtype={self.dtype.name})"


# ---------------------------------------------------------------------------- layers
class ILayer:
    _TRT_CLASS = "ILayer"
    _N_OUT = 1

    def __init__(self, network: Any, inputs: Sequence[ITensor]):
        object.__setattr__(self, "_network", network)
        object.__setattr__(self, "_inputs", list(inputs))
        idx = len(network._layers)
        object.__setattr__(self, "name", f"({type(self).__name__}) [{idx}]")
        object.__setattr__(self, "_outputs", [ITensor(network, self, i, f"{self.name}_output_{i}")
                                              for i in range(self._N_OUT)])
        object.__setattr__(self, "precision", DataType.FLOAT)
        for t in inputs:
            if not isinstance(t, ITensor) or t._network is not network:
                raise NetworkDefinitionError(f"{self.name}: input {t!r} is not a tensor of this network")

    def __setattr__(self, key, value):
        if not key.startswith("_"):
            API_LOG.append((self._TRT_CLASS, key, -1, ()))   # -1 marks an attribute set
            if not hasattr(self, key):
                raise AttributeError(f"{self._TRT_CLASS} has no attribute {key!r}")
            self._network._version += 1      # shapes downstream may change
        object.__setattr__(self, key, value)

    def _inferred(self):
        """Output (shape, dtype) list, cached until any layer attribute or input changes."""
        cache = self.__dict__.get("_cache")
        if cache is None or cache[0] != self._network._version:
            cache = (self._network._version, self._infer())
            object.__setattr__(self, "_cache", cache)
        return cache[1]

    def get_output(self, index: int) -> ITensor:
        API_LOG.append((self._TRT_CLASS, "get_output", 1, ()))
        return self._outputs[index]

    def get_input(self, index: int) -> ITensor:
        API_LOG.append((self._TRT_CLASS, "get_input", 1, ()))
        return self._inputs[index]

    def set_input(self, index: int, tensor: ITensor) -> None:
        API_LOG.append((self._TRT_CLASS, "set_input", 2, ()))
        if index >= len(self._inputs):
            raise NotImplementedError(f"{self.name}: set_input({index}) (dynamic inputs) is not emulated")
        self._inputs[index] = tensor
        self._network._version += 1

    def set_output_type(self, index: int, dtype: DataType) -> None:
        """A weakly typed network's type constraint; the stand-in computes FP32 anyway."""
        API_LOG.append((self._TRT_CLASS, "set_output_type", 2, ()))
        if not 0 <= index < len(self._outputs):
            raise self._err(f"set_output_type({index}): the layer has {len(self._outputs)} outputs")
        self.__dict__.setdefault("_output_types", {})[index] = dtype

    @property
    def num_inputs(self) -> int:
        return len(self._inputs)

    @property
    def num_outputs(self) -> int:
        return len(self._outputs)

    def _in(self, i=0):
        return self._inputs[i]

    def _store(self, y: np.ndarray, dt: DataType) -> np.ndarray:
        """A layer output as the tensor's type holds it (half rounds; FLOAT may run in float64)."""
        return y.astype(self._network._np(dt), copy=False)

    def _coef(self, w: np.ndarray) -> np.ndarray:
        return w.astype(self._network._np(DataType.FLOAT))

    def _on_add(self) -> None:
        """Checks TensorRT makes when the layer is added (shapes are checked when asked for)."""

    def _err(self, msg: str) -> NetworkDefinitionError:
        return NetworkDefinitionError(f"{self._TRT_CLASS} {self.name!r}: {msg}")

    def _infer(self) -> List[Tuple[Tuple[int, ...], DataType]]:
        raise NotImplementedError

    def _run(self, xs: List[np.ndarray]) -> List[np.ndarray]:
        raise NotImplementedError


def _compute(x: np.ndarray) -> np.ndarray:
    """Half tensors are computed in float32 (and rounded back by _float_out)."""
    return x.astype(np.float32) if x.dtype == np.float16 else x
