"""TEMPORARY: the store's old module names, while callers move to :mod:`sac.errors`."""

from sac.errors import Conflict, KeyImportError, UnknownMeter

__all__ = ["Conflict", "KeyImportError", "UnknownMeter"]
