"""A tiny meter object set for the association machines' tests."""

from __future__ import annotations

from typing import Any

from sac.dlms import Obis
from sac.dlms.axdr import (
    Array,
    DoubleLongUnsigned,
    LongUnsigned,
    OctetString,
    Structure,
    VisibleString,
)
from sac.dlms.cosem import ActionResult, DataAccessResult
from sac.dlms.xdlms import NO_VALUE, AttributeDescriptor

LDN = Obis("0.0.42.0.0.255")
FC = Obis("0.0.43.1.1.255")
PDR = Obis("0.0.96.1.10.255")
PROFILE = Obis("7.0.99.99.3.255")
VALVE = Obis("0.0.96.3.10.255")
KEY = bytes(range(16))
METER_TITLE = bytes.fromhex("2f19229199164103")


class MeterModel:
    """A tiny object set with Public/Management access rights, for the server machine."""

    def __init__(self) -> None:
        self.values: dict[Obis, Any] = {
            LDN: OctetString(b"FIO0000012345678"),
            FC: DoubleLongUnsigned(41),
            PDR: VisibleString("01234567890123"),
            PROFILE: Array(
                Structure((DoubleLongUnsigned(1_700_000_000 + i), LongUnsigned(i)))
                for i in range(120)
            ),
        }
        self.public = {LDN, FC}
        self.actions: list[tuple[int, Any]] = []

    def get(self, sap: int, attr: AttributeDescriptor, access: Any) -> Any:
        if sap == 16 and attr.instance not in self.public:
            return DataAccessResult.READ_WRITE_DENIED
        return self.values.get(attr.instance, DataAccessResult.OBJECT_UNDEFINED)

    def set(self, sap: int, attr: AttributeDescriptor, value: Any) -> DataAccessResult:
        if sap == 16:
            return DataAccessResult.READ_WRITE_DENIED
        self.values[attr.instance] = value
        return DataAccessResult.SUCCESS

    def action(self, sap: int, method: Any, params: Any) -> tuple[ActionResult, Any]:
        self.actions.append((method.method, params))
        return ActionResult.SUCCESS, NO_VALUE
