"""sac: an open-source head-end (SAC) for Italian smart gas meters, DLMS/COSEM over TCP/UDP."""

__version__ = "0.1.0.dev0"
