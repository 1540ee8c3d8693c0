"""The SOAP API for ERP, billing and maintenance systems: spyne, mounted at ``/soap`` in
the web application, its WSDL at ``/soap?wsdl``.

Operations (namespace :data:`NS`; each documented in the WSDL):

* ``ListMeters`` (paged by LDN, optionally only meters changed since a time) and
  ``GetMeter`` (LDN, PDR, profile, state, last values, last connection);
* ``GetReadings`` (one meter, a time range, optionally one object), ``ExportIndexReadings``
  (billing: the converted-volume index of every meter between two times), both paged with a
  cursor that resumes a large export where it stopped;
* ``GetEvents`` (events and alarms of one meter or all, between two times, paged);
* ``GetOpenAlarms`` (the alarms no operator has acknowledged, newest first, by category or
  meter, paged) and ``AcknowledgeAlarm`` (operators: an alarm's id and a note);
* ``GetConnections`` (one meter's sessions, pushes and polls, between two times, paged:
  their outcome, what was read and what was not);
* ``GetValveState``, ``RequestValve`` (close / enable opening: queued as a command, its id
  returned) and ``GetCommandStatus`` (with its history);
* ``RequestCommand`` (any kind, its typed parameters; a structure's or an array's value as
  typed JSON), ``ListCommands`` (by meter and state, newest first) and ``CancelCommand``
  (a pending one): :mod:`sac.web.soap_commands`;
* ``StartJob``, ``GetJob``, ``ListJobs``, ``CancelJob``: one command for many meters
  (:mod:`sac.web.soap_jobs`).

Authentication: HTTP Basic with the users and roles of the pages, a WS-Security
UsernameToken (PasswordText) in the SOAP header, or an API token as ``Authorization:
Bearer``.  Reads need a viewer; ``RequestValve``, ``RequestCommand``, ``CancelCommand``
and ``AcknowledgeAlarm`` an operator.
Every call is a line of the audit trail.  A password is checked with scrypt once, then
remembered (as a hash of the pair) for :data:`CREDENTIALS_TTL`, so that an export of many
pages does not pay the KDF on each; only the check is remembered: the user's role and
whether it is active are read from the store on every call, and a user changed since
(role, password, disabled) is checked again.

Faults carry a code the caller can act on (``Client.Authentication``, ``Client.Forbidden``,
``Client.UnknownMeter``, ``Client.UnknownCommand``, ``Client.UnknownAlarm``,
``Client.AlreadyAcknowledged``, ``Client.BadRange``, ``Client.PageTooLarge``,
``Client.BadCursor``, ``Client.BadInput``, ``Client.InvalidParameter`` (a command's
parameter, named first), ``Client.CommandFinal`` (cancel one no longer pending),
``Client.UnknownJob``, ``Client.JobState``, ``Client.UnknownMeters``; ``Server.Busy`` when
the SAC is checking as many passwords as it may at once); anything
unexpected is ``Server`` with an incident id, its traceback only in the log.  Times are
UTC ISO 8601 with their offset; a time given without one is refused.  Quantities carry
their unit: the DLMS code and its name.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from klein import Klein
from spyne import (
    Application,
    Date,
    DateTime,
    Integer,
    Integer64,
    ServiceBase,
    Unicode,
    rpc,
)
from spyne.protocol.soap import Soap11

from sac.dlms import Obis
from sac.errors import SacError
from sac.services import commands as command_service
from sac.store import (
    Actor,
    MeterQuery,
    Role,
    UnknownCommand,
    UnknownMeter,
)
from sac.store.exports import MAX_PAGE
from sac.web import display, soap_commands, soap_export, soap_jobs, soap_pages
from sac.web.errors import install as install_errors
from sac.web.history import MAX_DAYS, gas_days, index_objects, object_of, reading_slices
from sac.web.soap_call import Call
from sac.web.soap_types import (
    _COMMON,
    _PAGED,
    ACTIONS,
    MAX_METERS_PAGE,
    NS,
    AlarmPage,
    AlreadyAcknowledgedFault,
    BadCursorFault,
    BadInputFault,
    BadRangeFault,
    CommandStatus,
    ConnectionPage,
    DailyConsumption,
    EventInfo,
    EventPage,
    MeterInfo,
    MeterPage,
    MonthStartPage,
    PageTooLargeFault,
    ReadingPage,
    UnknownAlarmFault,
    UnknownCommandFault,
    UnknownMeterFault,
    ValveState,
    _command_status,
    _event_info,
    _gas_day_info,
    _limit,
    _meter_info,
    _range,
    _required,
    _span,
)
from sac.web.spyne_compat import Serialised, SoapResource

__all__ = ["NS", "SoapApi", "soap_application"]

MAX_ALARMS = 1000  # alarms a page of GetOpenAlarms


# --- the calls ----------------------------------------------------------------------------


def _obis(text: str | None) -> Obis | None:
    if not text:
        return None
    try:
        return Obis(text)
    except (ValueError, SacError):
        raise BadInputFault(f"{text!r} is not an OBIS code such as 7.0.13.2.0.255") from None


class ErpService(ServiceBase):
    """The SAC's data for ERP, billing and maintenance systems."""

    # jobs: one command for many meters (sac.web.soap_jobs)
    StartJob = soap_jobs.StartJob
    GetJob = soap_jobs.GetJob
    ListJobs = soap_jobs.ListJobs
    CancelJob = soap_jobs.CancelJob
    # commands of any kind (sac.web.soap_commands): operations of this one service
    RequestCommand = soap_commands.RequestCommand
    ListCommands = soap_commands.ListCommands
    CancelCommand = soap_commands.CancelCommand

    @rpc(
        DateTime(doc="only meters added, changed or heard from since then"),
        Unicode(doc="the 'next' of the page before"),
        Integer(doc=f"meters a page, 1 to {MAX_METERS_PAGE} (100)"),
        _returns=MeterPage,
        _throws=[*_COMMON, PageTooLargeFault, BadRangeFault],
    )
    async def ListMeters(ctx: Any, changedSince: Any, after: Any, limit: Any) -> MeterPage:
        """The meters by LDN, a page at a time."""
        call = Call(ctx)

        async def work(actor: Actor) -> MeterPage:
            size = _limit(limit, 100, MAX_METERS_PAGE)
            if changedSince is not None and changedSince.tzinfo is None:
                raise BadRangeFault("give changedSince with its UTC offset")
            query = MeterQuery(changed_since=changedSince)
            page = await call.web.store.meters.page(after=after or None, limit=size, query=query)
            bits = functools.partial(display.profile_bits, call.web.registry)
            return MeterPage(
                meters=[_meter_info(m, bits(m.profile)) for m in page.meters],
                next=page.next_after,
                total=page.total or 0,
            )

        return await call.run(Role.VIEWER, None, f"after {after}" if after else None, work)

    @rpc(
        _required(Unicode, "the meter's LDN"),
        _returns=MeterInfo,
        _throws=[*_COMMON, UnknownMeterFault],
    )
    async def GetMeter(ctx: Any, ldn: str) -> MeterInfo:
        """One meter with its last values."""
        call = Call(ctx)

        async def work(actor: Actor) -> MeterInfo:
            meter = await call.web.store.meters.get(ldn)
            if meter is None:
                raise UnknownMeter(ldn)
            return _meter_info(meter, display.profile_bits(call.web.registry, meter.profile))

        return await call.run(Role.VIEWER, ldn, None, work)

    @rpc(
        _required(Unicode, "the meter's LDN"),
        _required(DateTime, "from (included), with its UTC offset"),
        _required(DateTime, "to (excluded), with its UTC offset"),
        Unicode(doc="only this object, e.g. 7.0.13.2.0.255 (all when absent)"),
        Unicode(doc="the cursor of the page before"),
        Integer(doc=f"readings a page, 1 to {MAX_PAGE} (1000)"),
        _returns=ReadingPage,
        _throws=[*_PAGED, UnknownMeterFault, BadInputFault],
    )
    async def GetReadings(
        ctx: Any, ldn: str, start: Any, end: Any, obis: Any, cursor: Any, limit: Any
    ) -> Serialised:
        """One meter's readings captured in [start, end), in time order."""
        call = Call(ctx)

        async def work(actor: Actor) -> Serialised:
            lo, hi = _range(start, end)
            size, only = _limit(limit, 1000, MAX_PAGE), _obis(obis)
            page = reading_slices(
                call.web.store,
                lo,
                hi,
                ldn=ldn,
                obis=only,
                cursor=cursor or None,
                limit=size,
                exported=True,
            )
            return await soap_export.readings_answer("GetReadings", page)

        return await call.run(Role.VIEWER, ldn, _span(start, end), work)

    @rpc(
        _required(DateTime, "from (included), with its UTC offset"),
        _required(DateTime, "to (excluded), with its UTC offset"),
        Unicode(doc="the cursor of the page before (absent: the first page)"),
        Integer(doc=f"readings a page, 1 to {MAX_PAGE} (1000)"),
        _returns=ReadingPage,
        _throws=_PAGED,
    )
    async def ExportIndexReadings(
        ctx: Any, start: Any, end: Any, cursor: Any, limit: Any
    ) -> Serialised:
        """For billing: every converted-volume index reading of every meter captured in
        [start, end) (each meter's index object, as its profile names it), per meter then
        in time; resume an interrupted export from the last page's cursor."""
        call = Call(ctx)

        async def work(actor: Actor) -> Serialised:
            lo, hi = _range(start, end)
            size = _limit(limit, 1000, MAX_PAGE)
            index, by_profile = index_objects(call.web.registry)
            page = reading_slices(
                call.web.store,
                lo,
                hi,
                obis=index,
                attribute=2,
                by_profile=by_profile,
                cursor=cursor or None,
                limit=size,
                exported=True,
            )
            return await soap_export.readings_answer("ExportIndexReadings", page)

        detail = _span(start, end) + (" resumed" if cursor else "")
        return await call.run(Role.VIEWER, None, detail, work)

    @rpc(
        _required(Integer, "the gas month's year"),
        _required(Integer, "the gas month, 1 to 12"),
        Unicode(doc="the cursor of the page before (absent: the first page)"),
        _returns=MonthStartPage,
        _throws=[*_PAGED, BadInputFault],
    )
    async def ExportMonthStartIndexes(ctx: Any, year: int, month: int, cursor: Any) -> Serialised:
        """For billing: each meter with its PDR and the converted-volume index that closes
        the gas month before year-month starts (06:00 Europe/Rome of the 1st): the last
        captured at or before then within the gas day ending then (absent otherwise), by
        meter, 1000 a page; resume from the last page's cursor."""
        call = Call(ctx)

        async def work(actor: Actor) -> Serialised:
            if not 1970 <= year <= 9998 or not 1 <= month <= 12:
                raise BadInputFault("give a month 1 to 12 of a year 1970 to 9998")
            index, by_profile = index_objects(call.web.registry)
            page = await call.web.store.exports.month_start(
                year, month, obis=index, by_profile=by_profile, cursor=cursor or None
            )
            return await soap_export.month_start_answer(
                "ExportMonthStartIndexes", year, month, page
            )

        detail = f"{year}-{month:02d}" + (" resumed" if cursor else "")
        return await call.run(Role.VIEWER, None, detail, work)

    @rpc(
        _required(Unicode, "the meter's LDN"),
        _required(Date, "the first gas day"),
        _required(Date, f"the last gas day (included; at most {MAX_DAYS} days)"),
        _returns=DailyConsumption,
        _throws=[*_COMMON, UnknownMeterFault, BadRangeFault],
    )
    async def GetDailyConsumption(ctx: Any, ldn: str, first: Any, last: Any) -> DailyConsumption:
        """A meter's consumption per gas day (06:00 to 06:00 Europe/Rome, 23 or 25 hours on
        daylight-saving days): the last index of each day minus the day before's; a day
        without an index at one end is a gap (no volume), never folded into the next."""
        call = Call(ctx)

        async def work(actor: Actor) -> DailyConsumption:
            if first is None or last is None or not 0 <= (last - first).days < MAX_DAYS:
                raise BadRangeFault(f"give the first and last gas day, at most {MAX_DAYS} apart")
            meter = await call.web.store.meters.get(ldn)
            if meter is None:
                raise UnknownMeter(ldn)
            obis = object_of(call.web.registry, meter.profile, "converted_volume_index")
            days, unit = await gas_days(call.web.store, ldn, obis, first, last)
            unit = unit if unit is not None else meter.index_unit
            return DailyConsumption(
                ldn=ldn, pdr=meter.pdr, days=[_gas_day_info(d, unit) for d in days]
            )

        return await call.run(Role.VIEWER, ldn, f"{first}/{last}", work)

    @rpc(
        _required(DateTime, "from (included), with its UTC offset"),
        _required(DateTime, "to (excluded), with its UTC offset"),
        Unicode(doc="only this meter (all when absent)"),
        Unicode(doc="the cursor of the page before"),
        Integer(doc=f"events a page, 1 to {MAX_PAGE} (1000)"),
        _returns=EventPage,
        _throws=[*_PAGED, UnknownMeterFault],
    )
    async def GetEvents(
        ctx: Any, start: Any, end: Any, ldn: Any, cursor: Any, limit: Any
    ) -> Serialised:
        """Events and alarms that occurred in [start, end), of one meter or all."""
        call = Call(ctx)

        async def work(actor: Actor) -> Serialised:
            lo, hi = _range(start, end)
            size = _limit(limit, 1000, MAX_PAGE)
            page = await call.web.store.exports.events(
                lo, hi, ldn=ldn or None, cursor=cursor or None, limit=size
            )
            return await soap_pages.events_answer(page)

        return await call.run(Role.VIEWER, ldn, _span(start, end), work)

    @rpc(
        Unicode(
            doc="only this category: valve, battery, tamper, clock, security, key, firmware,"
            " billing, metrology, power, device, communication, unknown (all when absent)"
        ),
        Unicode(doc="only this meter's (all when absent)"),
        Unicode(doc="the cursor of the page before"),
        Integer(doc=f"alarms a page, 1 to {MAX_ALARMS} (100)"),
        _returns=AlarmPage,
        _throws=[*_COMMON, PageTooLargeFault, BadCursorFault, UnknownMeterFault, BadInputFault],
    )
    async def GetOpenAlarms(
        ctx: Any, category: Any, ldn: Any, cursor: Any, limit: Any
    ) -> AlarmPage:
        """The alarms no operator has acknowledged yet, newest first."""
        call = Call(ctx)

        async def work(actor: Actor) -> AlarmPage:
            size = _limit(limit, 100, MAX_ALARMS)
            page = await call.web.store.events.open_alarms(
                ldn or None, category or None, cursor or None, size
            )
            return AlarmPage(alarms=[_event_info(e) for e in page.alarms], cursor=page.cursor)

        return await call.run(Role.VIEWER, ldn, category, work)

    @rpc(
        _required(Integer64, "the alarm's id (GetOpenAlarms, GetEvents)"),
        Unicode(doc="what the operator notes (at most 1000 characters)"),
        _returns=EventInfo,
        _throws=[*_COMMON, UnknownAlarmFault, AlreadyAcknowledgedFault, BadInputFault],
    )
    async def AcknowledgeAlarm(ctx: Any, id: int, note: Any) -> EventInfo:
        """Acknowledge an open alarm (operators): who and when are kept, with the note."""
        call = Call(ctx)

        async def work(actor: Actor) -> EventInfo:
            return _event_info(await call.web.store.events.acknowledge(id, actor, note))

        return await call.run(Role.OPERATOR, str(id), note, work)

    @rpc(
        _required(Unicode, "the meter's LDN"),
        _required(DateTime, "from (included), with its UTC offset"),
        _required(DateTime, "to (excluded), with its UTC offset"),
        Unicode(doc="the cursor of the page before"),
        Integer(doc=f"connections a page, 1 to {MAX_PAGE} (1000)"),
        _returns=ConnectionPage,
        _throws=[*_PAGED, UnknownMeterFault],
    )
    async def GetConnections(
        ctx: Any, ldn: str, start: Any, end: Any, cursor: Any, limit: Any
    ) -> Serialised:
        """One meter's sessions (pushes, polls) started in [start, end), in the order they
        started: the outcome, the duration, what was read and what could not be."""
        call = Call(ctx)

        async def work(actor: Actor) -> Serialised:
            lo, hi = _range(start, end)
            size = _limit(limit, 1000, MAX_PAGE)
            page = await call.web.store.connections.page(
                ldn, lo, hi, cursor=cursor or None, limit=size
            )
            return await soap_pages.connections_answer(page)

        return await call.run(Role.VIEWER, ldn, _span(start, end), work)

    @rpc(
        _required(Unicode, "the meter's LDN"),
        _returns=ValveState,
        _throws=[*_COMMON, UnknownMeterFault],
    )
    async def GetValveState(ctx: Any, ldn: str) -> ValveState:
        """The valve's state as the meter last reported it, and commands under way."""
        call = Call(ctx)

        async def work(actor: Actor) -> ValveState:
            meter = await call.web.store.meters.get(ldn)
            if meter is None:
                raise UnknownMeter(ldn)
            open_commands = await call.web.store.commands.recent(ldn, None, 100)
            pending = [
                c
                for c in open_commands
                if c.kind.startswith("valve-") and c.state.value in ("pending", "sent")
            ]
            return ValveState(
                ldn=ldn,
                state=meter.valve_state,
                stateName=display.valve_name(meter.valve_state)
                if meter.valve_state is not None
                else "unknown",
                at=meter.status_at,
                pendingCommands=len(pending),
            )

        return await call.run(Role.VIEWER, ldn, None, work)

    @rpc(
        _required(Unicode, "the meter's LDN"),
        _required(Unicode(values=sorted(ACTIONS)), "close or enable-opening"),
        _returns=CommandStatus,
        _throws=[*_COMMON, UnknownMeterFault, BadInputFault],
    )
    async def RequestValve(ctx: Any, ldn: str, action: str) -> CommandStatus:
        """Queue a valve command (operators): the meter runs it at its next session; follow
        it with GetCommandStatus."""
        call = Call(ctx)

        async def work(actor: Actor) -> CommandStatus:
            if action not in ACTIONS:
                raise BadInputFault("the action is close or enable-opening")
            meter = await call.web.store.meters.get(ldn)
            if meter is None:
                raise UnknownMeter(ldn)
            profile = call.web.registry.match(assigned=meter.profile)
            command = await command_service.queue(
                call.web.store, profile, ldn, ACTIONS[action], {}, actor, now=call.web.now()
            )
            return _command_status(command)

        return await call.run(Role.OPERATOR, ldn, action, work)

    @rpc(
        _required(Integer64, "the id RequestValve gave"),
        _returns=CommandStatus,
        _throws=[*_COMMON, UnknownCommandFault],
    )
    async def GetCommandStatus(ctx: Any, id: int) -> CommandStatus:
        """A command's state (pending, sent, then done, failed, expired or cancelled), its
        parameters and its history."""
        call = Call(ctx)

        async def work(actor: Actor) -> CommandStatus:
            command = await call.web.store.commands.get(id)
            if command is None:
                raise UnknownCommand(id)
            return _command_status(command, await call.web.store.commands.history(id))

        return await call.run(Role.VIEWER, str(id), None, work)


def soap_application(web: Any) -> Application:
    """The spyne application of one :class:`sac.web.app.Web` (its store, registry, clock)."""
    application = Application(
        [ErpService],
        tns=NS,
        name="SacErp",
        in_protocol=Soap11(validator="lxml"),
        out_protocol=Soap11(),
    )
    application.sac_web = web
    application.sac_credentials = {}  # a hash of (name, password): (user, until)
    # spyne logs a request it cannot parse whole, at ERROR, through the standard logging:
    # that body may hold a WS-Security password.  Our resource reports faults itself.
    logging.getLogger("spyne").setLevel(logging.CRITICAL)
    return application


class SoapApi:
    """The SOAP router (mounted at ``/soap``): the spyne application, made on first use;
    ``web`` is the :class:`sac.web.app.Web` it shares with the pages."""

    app = Klein()

    def __init__(self, web: Any) -> None:
        self.web = web
        self._soap: SoapResource | None = None

    @app.route("/", branch=True, methods=["GET", "POST", "PUT", "DELETE", "HEAD"])
    def soap(self, request: Any) -> SoapResource:
        if self._soap is None:
            public = self.web.settings.public_url
            self._soap = SoapResource(
                soap_application(self.web), location=f"{public}/soap" if public else None
            )
        return self._soap

    install_errors(app, lambda soap: soap.web.render, lambda request: False)
