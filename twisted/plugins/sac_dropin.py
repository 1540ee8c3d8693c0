"""twistd's entry to the SAC: ``twistd -n sac --config sac.ini`` (see ``sac/tap.py``).

No ``__init__.py`` here, nor in ``twisted/``: this directory joins Twisted's own
``twisted.plugins`` package, from the source tree (on ``sys.path``) as from an installed
wheel (``site-packages/twisted/plugins/sac_dropin.py``).  Only names are imported here, so
that twistd lists its plugins without loading the SAC.
"""

from twisted.application.service import ServiceMaker

sac = ServiceMaker(
    "SAC",
    "sac.tap",
    "the SAC head-end for smart gas meters (DLMS/COSEM, UNI/TS 11291)",
    "sac",
)
