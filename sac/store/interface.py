"""TEMPORARY: the store's old module names, while callers move to :mod:`sac.store.connector`."""

from sac.store.connector import IStore, Store

__all__ = ["IStore", "Store"]
