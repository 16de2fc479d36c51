"""Import PaddleSlim 2.6 on a current setuptools.

``paddleslim/common/load_model.py`` does ``import pkg_resources`` at import time (only to
call ``pkg_resources.require('onnx')`` in ``load_onnx_model``, which we never use).
setuptools >= 81 no longer ships ``pkg_resources``, so on a fresh environment
``import paddleslim`` fails before any pruning code runs. When the real module is
missing we register a stand-in whose ``require`` checks installed distributions through
``importlib.metadata``; when it is present we leave it alone.
"""
from __future__ import annotations

import importlib.metadata
import sys
import types
import warnings


def _install_pkg_resources_stand_in() -> None:
    try:
        import pkg_resources  # noqa: F401
        return
    except ImportError:
        pass
    mod = types.ModuleType("pkg_resources")
    mod.__doc__ = "ppyolo_slim stand-in: only require() for PaddleSlim's import"

    def require(*requirements):
        for r in requirements:
            name = str(r).split(";")[0].strip()
            for sep in ("==", ">=", "<=", "~=", "!=", ">", "<"):
                name = name.split(sep)[0]
            importlib.metadata.distribution(name.strip())   # raises PackageNotFoundError
        return []

    mod.require = require
    sys.modules["pkg_resources"] = mod


def import_paddleslim():
    """``paddleslim``, importable whatever setuptools is installed."""
    _install_pkg_resources_stand_in()
    with warnings.catch_warnings():
        # paddleslim.analysis imports pip, which makes setuptools announce it replaces distutils
        warnings.filterwarnings("ignore", message="Setuptools is replacing distutils")
        import paddleslim
    return paddleslim
