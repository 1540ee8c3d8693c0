"""``sac-simulate`` run as a process: a fleet pushing to a listening socket, its keys CSV
imported by the SAC's own parser and used to open every push."""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.utils import getProcessOutputAndValue

from sac.dlms.apdu import decode_apdu
from sac.dlms.compact import compact_buffer_of, decode_compact
from sac.dlms.security import SecurityContext, Suite0Cipher
from sac.dlms.wrapper import WrapperFramer
from sac.profiles import discover_profiles, flag_id
from sac.store.keycsv import parse_key_csv

REGISTRY = discover_profiles().registry


class Sink(Protocol):
    def __init__(self, got: list[bytes]) -> None:
        self.framer = WrapperFramer(4096)
        self.got = got

    def dataReceived(self, data: bytes) -> None:
        for pdu in self.framer.feed(data):
            self.got.append(pdu.apdu)
            self.transport.loseConnection()  # the SAC has nothing to ask


@pytest_twisted.ensureDeferred
async def test_a_fleet_pushes_ciphered_frames_the_sac_can_open(tmp_path: Path) -> None:
    got: list[bytes] = []
    sac = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        Factory.forProtocol(lambda: Sink(got))
    )
    keys_csv, meters_csv = tmp_path / "keys.csv", tmp_path / "meters.csv"
    args = [
        "-m", "sac.simulator.cli",
        "--meters", "5",
        "--profile", "honeywell-ei7",
        "--manufacturer", "ELS",
        "--sac", f"127.0.0.1:{sac.getHost().port}",
        "--interval", "60",
        "--speed", "120",  # a push every 0.5 s of real time
        "--duration", "3",
        "--keys-csv", str(keys_csv),
        "--meters-csv", str(meters_csv),
    ]  # fmt: skip
    try:
        out, err, code = await getProcessOutputAndValue(sys.executable, args, env=None, path=".")
    finally:
        await sac.stopListening()
    assert code == 0, err.decode()
    rows, errors = parse_key_csv(keys_csv.read_text())
    assert errors == [] and len(rows) == 5 and all(r.client_sap == 1 for r in rows)
    keys = {r.ldn: r.ek for r in rows}
    meters = meters_csv.read_text().splitlines()
    assert meters[0] == "ldn,pdr,system_title,profile,address" and len(meters) == 6
    titles = {bytes.fromhex(line.split(",")[2]): line.split(",")[0] for line in meters[1:]}

    counters: dict[str, list[int]] = defaultdict(list)
    for apdu in got:
        envelope = decode_apdu(apdu)
        ldn = titles[envelope.system_title]
        assert flag_id(envelope.system_title) == "ELS"
        session = SecurityContext(Suite0Cipher(keys[ldn]), b"SACSACSA")
        notification = decode_apdu(session.unprotect(envelope))
        frame = decode_compact(
            compact_buffer_of(notification.body), REGISTRY["honeywell-ei7"].layouts
        )
        assert frame.template_id == 30 and frame["valve_control_state"] == 1
        counters[ldn].append(envelope.invocation_counter)
    assert len(counters) == 5 and len(got) >= 15
    assert all(c == sorted(set(c)) for c in counters.values())  # strictly increasing
    assert f"pushes: {len(got)}, failed connections: 0" in out.decode()


@pytest_twisted.ensureDeferred
async def test_bad_arguments_are_clear_errors() -> None:
    for args, message in (
        (["--profile", "nope"], b"no meter profile 'nope'"),
        (["--sac", "nowhere"], b"--sac wants HOST:PORT"),
        (["--meters", "0"], b"--meters must be at least 1"),
    ):
        _out, err, code = await getProcessOutputAndValue(
            sys.executable,
            ["-m", "sac.simulator.cli", *args, "--duration", "0"],
            env=None,
            path=".",
        )
        assert code != 0 and message in err and b"Traceback" not in err, err


def test_help_says_everything(capsys: Any) -> None:
    from sac.simulator.cli import main

    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for word in (
        "push mode",
        "listen mode",
        "--keys-csv",
        "--speed",
        "--interval",
        "ldn,client,ek,ak",
    ):
        assert word in text
