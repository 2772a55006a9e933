from .crd_connector import CRDConnector
from .pixel_embed_connector import PixelEmbedConnector

__all__ = ['CRDConnector', 'PixelEmbedConnector']
