"""Helpers every layer may use; they import nothing else from the package.

* ``io``: atomic file writes, the clean-up of a killed writer's temporary files, JSON reports.
* ``runtime``: CPU threads, device selection, seeding (these import paddle).
* ``layers``: ``unwrap`` (the model inside a DataParallel) and ``state_names``.

Nothing is imported here, so ``ppyolo_slim.utils.io`` stays free of paddle.
"""
