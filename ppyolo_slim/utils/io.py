"""Files written atomically (a crash or a full disk leaves the previous file intact), the
clean-up of temporary files a killed writer left, and JSON reports."""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from typing import Any, Callable, List

import numpy as np


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``.
    A crash or a full disk leaves the previous file intact."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    # the writer's pid in the name lets remove_stale_temps tell a killed writer's leftovers from live ones
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.{os.getpid()}.", suffix=".tmp", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())   # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# .<name>.<pid>.<mkstemp part>.tmp files and .<name>.export-<pid>-<part> folders (exporter)
_TEMP_NAME = re.compile(r"^\..+\.(?:(\d+)\.[A-Za-z0-9_]+\.tmp|export-(\d+)-[A-Za-z0-9_]+)$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True     # someone else's process, or cannot tell: keep its files
    return True


def remove_stale_temps(folder: str, recursive: bool = False) -> List[str]:
    """Delete temporary files and export folders left in ``folder`` by a writer that was
    killed (its pid no longer runs here); returns their paths. Final files are never touched."""
    removed: List[str] = []
    if not os.path.isdir(folder):
        return removed
    for root, dirs, files in os.walk(folder):
        for name in files + dirs:
            m = _TEMP_NAME.match(name)
            if not m or _alive(int(m.group(1) or m.group(2))):
                continue
            p = os.path.join(root, name)
            try:
                shutil.rmtree(p) if os.path.isdir(p) and not os.path.islink(p) else os.unlink(p)
                removed.append(p)
            except OSError:
                pass        # not ours to fight over; it stays, as before
        dirs[:] = [x for x in dirs if os.path.isdir(os.path.join(root, x))] if recursive else []
    return removed


def json_default(o: Any):
    """NumPy scalars and arrays become plain numbers and lists."""
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def dumps(obj: Any, indent: int = 1, default: Callable[[Any], Any] = json_default) -> str:
    return json.dumps(obj, indent=indent, default=default) + "\n"


def write_json(path: str, obj: Any, indent: int = 1, default: Callable[[Any], Any] = json_default) -> None:
    atomic_write_bytes(path, dumps(obj, indent, default).encode())
