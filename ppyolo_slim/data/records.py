"""The sample structure every data format is turned into (the data contract)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, NamedTuple, Optional

import numpy as np


class DataError(ValueError):
    """A data set that cannot be used at all; the message names the source and why."""


@dataclass
class Record:
    """One image and its boxes, in the image's own pixels."""
    path: str
    image_id: int
    width: int
    height: int
    boxes: np.ndarray      # [n, 4] float32 x1, y1, x2, y2 in original pixels
    classes: np.ndarray    # [n] int64, contiguous class indices 0..nc-1

    def __post_init__(self):
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.classes = np.asarray(self.classes, dtype=np.int64).reshape(-1)
        if len(self.boxes) != len(self.classes):
            raise ValueError(f"{self.path}: {len(self.boxes)} boxes but {len(self.classes)} classes")


class Issue(NamedTuple):
    """One problem found in the data: the file it is in and what is wrong (and what was done)."""
    file: str
    reason: str


@dataclass
class DataReport:
    """What the scan found, as data (for tests and the trainer) and as one printable summary."""
    source: str = ""
    issues: List[Issue] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)          # not tied to one file
    splits: dict = field(default_factory=dict)              # split -> {found, used, boxes, background}

    def extend(self, other: "DataReport") -> None:
        self.issues.extend(other.issues)
        self.notes.extend(other.notes)
        self.splits.update(other.splits)

    def files(self) -> List[str]:
        return sorted({i.file for i in self.issues})

    def summary(self, max_lines: int = 40) -> str:
        parts = []
        for split, s in self.splits.items():
            parts.append(f"{split}: {s['used']}/{s['found']} images usable, {s['boxes']} boxes"
                         + (f", {s['background']} without boxes" if s.get("background") else ""))
        head = f"data {self.source}: " + "; ".join(parts)
        if not self.issues:
            head += "; no problems found"
        else:
            head += f"; {len(self.issues)} problem(s) in {len(self.files())} file(s):"
        lines = [head]
        for i in self.issues[:max_lines]:
            lines.append(f"  {i.file}: {i.reason}")
        if len(self.issues) > max_lines:
            lines.append(f"  ... and {len(self.issues) - max_lines} more (all of them are in "
                         f"DataSpec.report.issues and in the scan cache files)")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)


@dataclass
class DataSpec:
    """A data set ready to train on: class names and the usable records of each split."""
    names: List[str]
    train: List[Record]
    val: List[Record]
    source: str
    report: DataReport = field(default_factory=DataReport)
    category_ids: Optional[List[int]] = None   # COCO: class index -> the json's category id

    @property
    def nc(self) -> int:
        return len(self.names)

    @property
    def issues(self) -> List[Issue]:
        return self.report.issues
