"""Meter profile plugins: each module here holds one or more ``sac.profiles.MeterProfile``.

Vendors add modules to this package from their own distributions: a wheel that installs
``sac/plugins/<vendor>.py`` (and no ``sac/__init__.py`` or ``sac/plugins/__init__.py``) is
found through ``pluginPackagePaths``, as Twisted's own plugin packages are.  See
``docs/profiles.md``.
"""

from twisted.plugin import pluginPackagePaths

__path__.extend(pluginPackagePaths(__name__))
__all__: list[str] = []
