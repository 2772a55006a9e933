from . import backbones, connectors, losses  # noqa: F401
