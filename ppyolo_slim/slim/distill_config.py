"""The ``distill:`` config section (distill.py uses it). Apart from distill.py so that
composing a config imports no paddle."""
from __future__ import annotations

from typing import Optional

from ..settings import AT_LEAST_0, Section, section, setting


@section("distill")
class DistillConfig(Section):
    enabled: bool = setting(False)
    # .pdparams of the teacher (the unpruned model); frozen
    teacher: Optional[str] = setting(None, (lambda v: bool(v.strip()), "a path to a .pdparams file"), str)
    weight: float = setting(1.0, AT_LEAST_0)   # output loss weight (teacher-objectness-weighted, as DistillYOLOv3Loss)
