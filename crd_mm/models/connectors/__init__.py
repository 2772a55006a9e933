from .crd_connector import CRDConnector

__all__ = ['CRDConnector']
