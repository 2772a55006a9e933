from . import backbones, connectors, losses  # noqa: F401
from . import algorithms  # noqa: F401
