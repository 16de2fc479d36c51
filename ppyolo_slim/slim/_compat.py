"""``import_paddleslim`` for the slim modules; the version differences it handles
(setuptools without ``pkg_resources``, Paddle 3) live in ``ppyolo_slim/compat.py``."""
from ..compat import import_paddleslim

__all__ = ["import_paddleslim"]
