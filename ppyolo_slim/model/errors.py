"""The error for weights whose shapes do not fit the network, in a module of its own: the block
descriptions (``block_types.py``) raise it and sit below ``channels.py`` and ``weights.py``."""


class WeightShapeError(ValueError):
    """Weights whose shapes do not fit the network; the message names the parameter."""
