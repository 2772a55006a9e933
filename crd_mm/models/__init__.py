from . import algorithms, backbones, connectors, losses  # noqa: F401
