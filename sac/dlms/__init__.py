"""sac.dlms: a sans-IO DLMS/COSEM codec (IEC 62056) for UNI/TS 11291 gas meters.

No I/O, no Twisted, no database, no clock: bytes in, typed values out, and back.

* :mod:`~sac.dlms.obis` -- :class:`Obis`
* :mod:`~sac.dlms.axdr` -- A-XDR ``Data`` and BER lengths; the typed values
  (:mod:`~sac.dlms.datatypes`, re-exported there)
* :mod:`~sac.dlms.cosemtime` -- COSEM date/time values
* :mod:`~sac.dlms.wrapper` -- the TCP-UDP wrapper framer
* :mod:`~sac.dlms.xdlms`, :mod:`~sac.dlms.acse` -- APDUs; :func:`decode_apdu` for any (xdlms
  re-exports :mod:`~sac.dlms.descriptors` and :mod:`~sac.dlms.notification`)
* :mod:`~sac.dlms.security` -- suite 0 AES-GCM, ciphered envelopes, counters
* :mod:`~sac.dlms.compact` -- compact frames from declared layouts (the UNI/TS layouts
  themselves are data beside the profiles: :mod:`sac.profiles.layouts`)
* :mod:`~sac.dlms.association` -- client and server association machines
"""

from sac.dlms.apdu import decode_apdu
from sac.dlms.obis import Obis

__all__ = ["Obis", "decode_apdu"]
