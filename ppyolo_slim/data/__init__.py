"""Data: formats (ultralytics YAML, COCO json, the generated shapes set), checks, augmentation,
batching. The contract other areas code to is ``load_data``, ``Record``, ``DataSpec``,
``letterbox``, ``DetectionDataset``, ``collate`` and ``build_loader``."""
from .augment import letterbox
from .formats import load_data
from .loader import AUGMENT_KEYS, DataLoader, DetectionDataset, build_loader, collate, read_image
from .records import DataError, DataReport, DataSpec, Issue, Record
from .shapes import default_shapes_dir, ensure_shapes, generate_shapes

__all__ = ["load_data", "Record", "DataSpec", "DataReport", "Issue", "DataError", "letterbox",
           "DetectionDataset", "DataLoader", "collate", "build_loader", "read_image", "AUGMENT_KEYS",
           "generate_shapes", "ensure_shapes", "default_shapes_dir"]
