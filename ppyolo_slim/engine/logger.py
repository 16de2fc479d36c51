"""VisualDL logging for rank 0; every other rank (and log.visualdl: false) gets a no-op."""
from __future__ import annotations

import os
from typing import Dict, Optional

import numpy as np


class NullLogger:
    logdir: Optional[str] = None

    def scalars(self, values: Dict[str, float], step: int) -> None: ...
    def histogram(self, tag: str, values, step: int, buckets: int = 50) -> None: ...
    def image(self, tag: str, img, step: int) -> None: ...
    def text(self, tag: str, text: str, step: int) -> None: ...
    def close(self) -> None: ...


class VisualDLLogger(NullLogger):
    def __init__(self, logdir: str):
        from visualdl import LogWriter
        os.makedirs(logdir, exist_ok=True)
        self.logdir = logdir
        self.writer = LogWriter(logdir=logdir)

    def scalars(self, values, step):
        for k, v in values.items():
            if v is not None and np.isfinite(v):
                self.writer.add_scalar(tag=k, value=float(v), step=int(step))

    def histogram(self, tag, values, step, buckets=50):
        values = np.asarray(values, dtype="float64").ravel()
        if values.size:
            self.writer.add_histogram(tag=tag, values=values, step=int(step), buckets=buckets)

    def image(self, tag, img, step):
        self.writer.add_image(tag=tag, img=np.asarray(img, dtype="uint8"), step=int(step))

    def text(self, tag, text, step):
        self.writer.add_text(tag=tag, text_string=str(text), step=int(step))

    def close(self):
        self.writer.close()


def make_logger(output_dir: str, enabled: bool, rank: int = 0) -> NullLogger:
    if not enabled or rank != 0:
        return NullLogger()
    return VisualDLLogger(os.path.join(output_dir, "vdl"))
