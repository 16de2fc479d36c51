"""ppyolo_slim.deploy: a TensorRT network built layer by layer from a ppyolo-slim ``.pdparams``.

``builder.py`` emits the layers through the TensorRT 10 network-definition API;
``numpy_net.py`` is a CPU stand-in for that API that executes the same calls in NumPy,
so the hand-built graph is checked against the Paddle model on machines without a GPU.
"""
