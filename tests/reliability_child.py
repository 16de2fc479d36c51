"""Test-only wrapper: run tools/train.py or tools/pipeline.py with hooks that announce on stdout
where the process is, so a test can SIGKILL it at a chosen point. The library has no such hooks.

    python tests/reliability_child.py train|pipeline ARGS...

Announcements (one line each, flushed): ``@@ step EPOCH I`` before a training step's forward,
``@@ eval`` at each evaluation batch, ``@@ write NAME`` when a file written through
``atomic_write_bytes`` has its data in the temporary file NAME (before fsync and rename).
``RELIABILITY_HOLD=PREFIX`` pauses writes whose temporary name starts with ``.PREFIX.`` for
a minute right there, so the kill surely lands while that file is half-done.
"""
import os
import runpy
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import ppyolo_slim  # noqa: E402,F401  (import order: before paddle)


def announce(msg: str) -> None:
    sys.stdout.write(f"@@ {msg}\n")
    sys.stdout.flush()


def install_hooks() -> None:
    hold = os.environ.get("RELIABILITY_HOLD")
    real_fsync = os.fsync

    def fsync(fd):
        name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        if name.endswith(".tmp"):
            announce(f"write {name}")
            if hold and name.startswith(f".{hold}."):
                time.sleep(60)
        return real_fsync(fd)
    os.fsync = fsync

    from ppyolo_slim.engine import trainer
    from ppyolo_slim.engine.predict import DygraphPredictor
    real_step = trainer.Trainer._forward_backward

    def step(self, imgs, targets, epoch, i):
        announce(f"step {epoch} {i}")
        return real_step(self, imgs, targets, epoch, i)
    trainer.Trainer._forward_backward = step

    real_predict = DygraphPredictor.__call__

    def predict(self, images):
        announce("eval")
        return real_predict(self, images)
    DygraphPredictor.__call__ = predict


if __name__ == "__main__":
    tool = sys.argv[1]
    install_hooks()
    sys.argv = [f"tools/{tool}.py"] + sys.argv[2:]
    runpy.run_path(os.path.join(ROOT, "tools", f"{tool}.py"), run_name="__main__")
