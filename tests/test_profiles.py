"""Meter profiles: discovery as plugins, matching, the shipped profiles on their vectors, and
broken or foreign plugins."""

from __future__ import annotations

import datetime as dt
import importlib
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.utils import getProcessOutputAndValue
from zope.interface.verify import verifyObject

from sac.dlms.apdu import decode_apdu
from sac.dlms.axdr import Integer, LongUnsigned, encode_data
from sac.dlms.compact import compact_buffer_of, decode_compact
from sac.dlms.security import SecurityContext, Suite0Cipher
from sac.dlms.wrapper import decode_wrapper
from sac.errors import PluginError
from sac.profiles import (
    GENERIC_PROFILE,
    STANDARD_OBJECTS,
    IMeterProfile,
    MeterProfile,
    ProfileRegistry,
    ValveAction,
    discover_profiles,
    flag_id,
    uni_ts_system_title,
    valve_steps,
)
from sac.protocols.push import ListenerSettings
from sac.services.acquisition import Acquisition
from sac.services.commands import CommandError, validate
from sac.services.push import PushFactory
from sac.services.session import SessionSettings
from sac.simulator.fleet import Fleet
from tests.acquisition.conftest import REGISTRY, provision
from tests.conftest import all_vectors, vbytes, vector
from tests.store.conftest import Backend

NOW = dt.datetime(2026, 12, 3, 12, tzinfo=dt.UTC)

SHIPPED = {"uni-ts-11291-12-2", "honeywell-ei7", "fiorentini"}
INDEX = STANDARD_OBJECTS["converted_volume_index"].obis
BATTERY = STANDARD_OBJECTS["battery_autonomy"].obis


@pytest.fixture(scope="module")
def registry() -> ProfileRegistry:
    found = discover_profiles()
    assert found.problems == ()
    return found.registry


def test_the_shipped_profiles_are_found_and_valid(registry: ProfileRegistry) -> None:
    assert set(registry.profiles) == SHIPPED
    for profile in registry.profiles.values():
        verifyObject(IMeterProfile, profile)
        profile.validate()


def test_a_meter_is_matched_by_assignment_manufacturer_ldn_prefix_or_default() -> None:
    generic = MeterProfile(name=GENERIC_PROFILE, description="generic")
    acme = MeterProfile(name="acme", description="acme", manufacturers=("ACM",))
    prefixed = MeterProfile(name="by-prefix", description="p", ldn_prefixes=("ACM0", "ACM01"))
    longer = MeterProfile(name="longer", description="p", ldn_prefixes=("ACM012",))
    registry = ProfileRegistry([generic, acme, prefixed, longer])
    title = uni_ts_system_title("ACM", 123)
    assert registry.match(system_title=title, ldn="ACM0120000000000") is acme
    assert registry.match(system_title=None, ldn="ACM0120000000000") is longer
    assert registry.match(ldn="ACM0000000000000") is prefixed
    assert registry.match(ldn="XYZ0000000000000") is generic
    assert registry.match(assigned="acme", ldn="XYZ0000000000000") is acme
    with pytest.raises(PluginError, match="no meter profile 'nope'"):
        registry.match(assigned="nope")


def test_uni_ts_system_titles() -> None:
    title = bytes.fromhex("2f19229199164103")  # TV1: Pietro Fiorentini, serial 034116999122
    assert flag_id(title) == "FIO"
    assert uni_ts_system_title("FIO", 34116999122) == title
    assert flag_id(None) is None and flag_id(b"\x00" * 8) is None and flag_id(b"\x01") is None
    with pytest.raises(ValueError):
        uni_ts_system_title("fio", 1)


def decoded_tv1(vid: str, registry: ProfileRegistry):
    v = vector(vid)
    pdu = decode_wrapper(vbytes(vid), 2048)
    key = bytes.fromhex(v["key_hex"])
    title = bytes.fromhex(v["system_title_hex"])
    session = SecurityContext(Suite0Cipher(key), b"SACSACSA", peer_system_title=title)
    notification = decode_apdu(session.unprotect(decode_apdu(pdu.apdu)))
    profile = registry.match(system_title=title)
    return profile, decode_compact(compact_buffer_of(notification.body), profile.layouts)


@pytest.mark.parametrize("vid", sorted(v for v in all_vectors() if v.startswith("TV1-")))
def test_fiorentini_decodes_its_real_pushes(vid: str, registry: ProfileRegistry) -> None:
    profile, frame = decoded_tv1(vid, registry)
    assert profile.name == "fiorentini" and profile.omit_system_title
    plain = bytes.fromhex(vector(vid)["plaintext_hex"])
    buffer = plain[8:]  # 0F, invoke id (4), date-time 00, 09, length
    assert frame.template_id == 18
    assert frame["unix_time"] == int.from_bytes(buffer[1:5], "big")
    assert frame["converted_volume_index"] == int.from_bytes(buffer[10:14], "big")
    assert frame["converted_volume_index_under_alarm"] == int.from_bytes(buffer[14:18], "big")
    assert frame["daily_unix_time"] == int.from_bytes(buffer[18:22], "big")
    assert frame["daily_diagnostic"] == int.from_bytes(buffer[22:24], "big")
    assert frame["unidentified_32"] == buffer[32:34]


def test_fiorentini_first_push_values(registry: ProfileRegistry) -> None:
    _, frame = decoded_tv1("TV1-01e5", registry)  # docs/uni-ts-11291.md §2.5
    assert dt.datetime.fromtimestamp(frame["unix_time"], dt.UTC) == dt.datetime(
        2018, 2, 15, 13, 55, 2, tzinfo=dt.UTC
    )
    assert (frame["converted_volume_index"], frame["converted_volume_index_under_alarm"]) == (
        0x11,
        0x0A,
    )
    assert (frame["daily_diagnostic"], frame["daily_converted_volume_index"]) == (0x1480, 13)


def test_honeywell_decodes_cf30_with_battery_in_percent(registry: ProfileRegistry) -> None:
    profile = registry.match(system_title=uni_ts_system_title("ELS", 42))
    assert profile.name == "honeywell-ei7" and profile.battery_unit == 56
    e = vector("TV2-CF30")["expected"]
    frame = decode_compact(vbytes("TV2-CF30"), profile.layouts)
    assert frame["primary_battery_residual_pct"] == e["primary_battery_residual_pct"] == 93
    assert frame["current_diagnostic"] == e["current_diagnostic"]
    assert len(frame["interval_data"]) == e["interval_data_count"]
    with pytest.raises(Exception, match="template"):
        decode_compact(vbytes("TV2-CF30"), registry[GENERIC_PROFILE].layouts)


def test_the_generic_profile_reads_cf47_at_the_spec_offsets(registry: ProfileRegistry) -> None:
    # CF47 written by hand from the offset table of docs/uni-ts-11291.md §2.4, not by our layout
    buffer = (
        bytes([47])
        + struct.pack(
            ">IHBBHHHIIBI", 1_700_000_000, 0x0102, 1, 2, 7, 9, 0x0480, 123_456, 78, 5, 991
        )
        + b"\x02\xab\xcd"
    )
    frame = decode_compact(buffer, registry[GENERIC_PROFILE].layouts)
    assert frame["unix_time"] == 1_700_000_000 and frame["pp4_network_status"] == 0x0102
    assert frame["valve_output_state"] is True and frame["valve_control_state"] == 2
    assert (frame["metrological_event_counter"], frame["event_counter"]) == (7, 9)
    assert frame["daily_diagnostic"] == 0x0480
    assert (frame["converted_volume_index"], frame["converted_volume_index_under_alarm"]) == (
        123_456,
        78,
    )
    assert (frame["billing_period_counter"], frame["management_frame_counter"]) == (5, 991)
    assert frame["spare"] == b"\xab\xcd"


def test_valve_commands_by_method_or_by_script(registry: ProfileRegistry) -> None:
    [close] = valve_steps(registry[GENERIC_PROFILE], ValveAction.CLOSE)
    assert (close.target.class_id, str(close.target.obis), close.method) == (
        70,
        "0.0.96.3.10.255",
        1,
    )
    assert close.value == Integer(0)
    [enable] = valve_steps(registry[GENERIC_PROFILE], ValveAction.ENABLE_OPENING)
    assert enable.method == 2
    at = dt.datetime(2025, 1, 15, 10, 0)
    script, when = valve_steps(registry["honeywell-ei7"], ValveAction.CLOSE, at)
    # the values of the schedule SETs of docs/uni-ts-11291.md §2.5 (TV5, HW-A2's), byte for byte
    assert (script.target.class_id, str(script.target.obis), script.target.attribute) == (
        22,
        "0.0.15.0.1.255",
        2,
    )
    assert encode_data(script.value) == bytes.fromhex(
        "02020906 00000A006AFF 120001".replace(" ", "")
    )
    assert when.target.attribute == 4
    assert encode_data(when.value) == bytes.fromhex(
        "010102020904 0A000000 0905 07E9010FFF".replace(" ", "")
    )
    assert script.value[1] == LongUnsigned(1)


# --- broken and foreign plugins ---------------------------------------------------------------

GOOD = """
from sac.profiles import MeterProfile
good = MeterProfile(name="good-one", description="fine")
"""
BROKEN_IMPORT = "raise RuntimeError('the vendor forgot a dependency')\n"
BAD_PROFILE = """
from sac.profiles import MeterProfile
bad = MeterProfile(name="Bad Name", description="x", objects={}, max_pdu=10)
"""
NOT_A_PROFILE = """
from zope.interface import implementer
from twisted.plugin import IPlugin
from sac.profiles import IMeterProfile

@implementer(IPlugin, IMeterProfile)
class Half:
    name = "half"

half = Half()
"""
DUPLICATE = """
from sac.profiles import MeterProfile
again = MeterProfile(name="good-one", description="same name")
"""


def test_a_broken_plugin_is_reported_by_name_and_the_others_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "vendorplugins"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name, text in {
        "a_good": GOOD,
        "b_broken_import": BROKEN_IMPORT,
        "c_bad_profile": BAD_PROFILE,
        "d_not_a_profile": NOT_A_PROFILE,
        "e_duplicate": DUPLICATE,
    }.items():
        (package / f"{name}.py").write_text(textwrap.dedent(text))
    monkeypatch.syspath_prepend(str(tmp_path))
    found = discover_profiles(importlib.import_module("vendorplugins"))
    assert list(found.registry.profiles) == ["good-one"]
    problems = {p.name: p.reason for p in found.problems}
    assert (
        "RuntimeError: the vendor forgot a dependency" in problems["vendorplugins.b_broken_import"]
    )
    assert "name 'Bad Name'" in problems["Bad Name"] and "objects lack" in problems["Bad Name"]
    assert "max PDU 10" in problems["Bad Name"]
    assert "half" in problems and "attribute" in problems["half"]
    assert problems["good-one"] == "another plugin has this name already"
    assert problems[GENERIC_PROFILE] == "the generic profile is missing"
    assert str(found.problems[0]).startswith("profile plugin ")


def test_a_vendor_wheel_dropping_a_module_into_sac_plugins_is_found(tmp_path: Path) -> None:
    source = tmp_path / "acme"
    (source / "sac" / "plugins").mkdir(parents=True)
    (source / "sac" / "plugins" / "acme_g4.py").write_text(
        textwrap.dedent(
            """
            from sac.profiles import MeterProfile, ValveMethod
            acme_g4 = MeterProfile(
                name="acme-g4",
                description="ACME G4 (a vendor's own wheel)",
                manufacturers=("ACM",),
                valve_method=ValveMethod.SCHEDULED_SCRIPT,
            )
            """
        )
    )
    (source / "setup.py").write_text(
        "from setuptools import setup\n"
        "setup(name='acme-sac-profiles', version='1.0', packages=['sac.plugins'])\n"
    )
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    pip = [sys.executable, "-m", "pip", "-q"]
    subprocess.run(
        [
            *pip,
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path / "dist"),
            str(source),
        ],
        check=True,
        env=env,
        capture_output=True,
    )
    [wheel] = (tmp_path / "dist").glob("*.whl")
    site = tmp_path / "site"
    subprocess.run(
        [*pip, "install", "--no-deps", "--target", str(site), str(wheel)],
        check=True,
        env=env,
        capture_output=True,
    )
    assert not (site / "sac" / "__init__.py").exists()  # only the module, as vendors ship it
    probe = (
        "from sac.profiles import discover_profiles, uni_ts_system_title\n"
        "found = discover_profiles()\n"
        "print(sorted(found.registry.profiles), list(map(str, found.problems)))\n"
        "print(found.registry.match(system_title=uni_ts_system_title('ACM', 7)).name)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env={**env, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert out == [f"{sorted(SHIPPED | {'acme-g4'})} []", "acme-g4"]


def docs_example() -> tuple[str, str]:
    """The ACME example of docs/profiles.md, as a vendor copies it: setup.py, the module."""
    text = (Path(__file__).parent.parent / "docs" / "profiles.md").read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```python\n")[1:]]
    [setup] = [b for b in blocks if "from setuptools import setup" in b]
    [example] = [b for b in blocks if "acme_g4 = MeterProfile(" in b]
    return setup, example


def test_the_example_of_docs_profiles_md_works() -> None:
    _setup, example = docs_example()
    namespace: dict = {}
    exec(compile(example, "docs/profiles.md", "exec"), namespace)
    profile = namespace["acme_g4"]
    verifyObject(IMeterProfile, profile)
    profile.validate()
    registry = ProfileRegistry([profile, MeterProfile(name=GENERIC_PROFILE, description="g")])
    assert registry.match(system_title=uni_ts_system_title("ACM", 5)) is profile
    frame = decode_compact(
        bytes([200]) + struct.pack(">IIHB", 1_700_000_000, 4321, 900, 1), profile.layouts
    )
    assert (frame["converted_volume_index"], frame["battery_hours"]) == (4321, 900)
    assert str(profile.objects["pdr"].obis) == "0.128.96.1.10.255"
    keys = {s.key for s in profile.settings}
    assert "push_retries" in keys and "valve_pin" not in keys and "pdr" in keys
    checked = validate("set-setting", {"setting": "push_retries", "value": "3"}, profile, NOW)
    assert checked["value"] == {"type": "unsigned", "value": 3}
    with pytest.raises(CommandError, match=r"not in 0\.\.10"):
        validate("set-setting", {"setting": "push_retries", "value": "11"}, profile, NOW)


def build_and_install(tmp_path: Path, setup: str, module: str) -> Path:
    """A vendor's wheel of ``setup`` and ``sac/plugins/acme_g4.py``, installed in a folder
    of its own (returned, for PYTHONPATH)."""
    source = tmp_path / "acme_sac"
    (source / "sac" / "plugins").mkdir(parents=True)
    (source / "setup.py").write_text(setup)
    (source / "sac" / "plugins" / "acme_g4.py").write_text(module)
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    pip = [sys.executable, "-m", "pip", "-q"]
    dist, site = tmp_path / "dist", tmp_path / "site"
    build = ["wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(source)]
    subprocess.run([*pip, *build], check=True, env=env, capture_output=True)
    [wheel] = dist.glob("*.whl")
    install = ["install", "--no-deps", "--target", str(site), str(wheel)]
    subprocess.run([*pip, *install], check=True, env=env, capture_output=True)
    return site


@pytest_twisted.ensureDeferred
async def test_the_acme_wheel_of_docs_profiles_md_is_simulated_and_its_pushes_stored(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    setup, module = docs_example()
    site = build_and_install(tmp_path, setup, module)
    env = {**os.environ, "PYTHONPATH": str(site)}
    simulate = [sys.executable, "-m", "sac.simulator.cli"]
    listed = subprocess.run(
        [*simulate, "--list-profiles"], env=env, capture_output=True, text=True, check=True
    )
    assert "acme-g4" in listed.stdout and "skipped" not in listed.stderr

    # the SAC knows the profile too (the same text), and the meters the simulator will run
    namespace: dict = {}
    exec(compile(module, "docs/profiles.md", "exec"), namespace)
    acme = namespace["acme_g4"]
    registry = ProfileRegistry([*REGISTRY.profiles.values(), acme])
    backend = Backend("sqlite", tmp_path, request)
    store = backend.make()
    await store.open()
    fleet = Fleet(3, acme, manufacturer="ACM", clock=reactor.seconds, reactor=reactor)
    await provision(store, fleet)
    factory = PushFactory(
        Acquisition(store, registry, reactor=reactor),
        store,
        reactor=reactor,
        settings=ListenerSettings(response_timeout=3.0),
        session=SessionSettings(name="sac-test"),
    )
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
    args = ["--profile", "acme-g4", "--manufacturer", "ACM", "--meters", "3"]
    args += ["--sac", f"127.0.0.1:{port.getHost().port}", "--interval", "60", "--speed", "120"]
    try:
        out, err, code = await getProcessOutputAndValue(
            sys.executable, [*simulate[1:], *args, "--duration", "3"], env=env, path="."
        )
        assert code == 0 and b"Traceback" not in err, err.decode()
        assert b"failed connections: 0, failed pushes: 0" in out, out
        assert int(out.split(b"pushes: ")[1].split(b",")[0]) >= 3
        for m in fleet.meters:
            [index] = await store.readings.last(m.ldn, INDEX)
            [battery] = await store.readings.last(m.ldn, BATTERY)
            assert index.value > 0 and (index.scaler, index.unit) == (-3, 14)
            assert (battery.value, battery.unit) == (3650, 5)  # hours, as ACME counts
            meter = await store.meters.get(m.ldn)
            assert meter is not None and meter.last_connection is not None
    finally:
        await port.stopListening()
        for protocol in list(factory.active):
            protocol.transport.abortConnection()
        await store.close()


def test_a_meter_s_objects_are_its_profile_s_over_the_catalogue() -> None:
    _setup, module = docs_example()
    namespace: dict = {}
    exec(compile(module, "docs/profiles.md", "exec"), namespace)
    acme = namespace["acme_g4"]
    registry = ProfileRegistry([*REGISTRY.profiles.values(), acme])
    objects = registry.objects_of("acme-g4")
    assert str(objects["pdr"].obis) == "0.128.96.1.10.255"
    assert objects["converted_volume_index"] == STANDARD_OBJECTS["converted_volume_index"]
    assert registry.objects_of("not-installed") is STANDARD_OBJECTS
    assert registry.objects_of(None) is STANDARD_OBJECTS
    # its read plan leaves out the battery its frame carries, and is valid
    acme.validate()
    assert "battery_autonomy" not in [item.quantity for item in acme.read_plan]
    assert len(acme.read_plan) == len(REGISTRY.profiles[GENERIC_PROFILE].read_plan) - 1
