"""TEMPORARY: the store's old module names, while callers move to :mod:`sac.errors`."""

from sac.errors import CommandStateError, UnknownCommand, UnknownUser

__all__ = ["CommandStateError", "UnknownCommand", "UnknownUser"]
