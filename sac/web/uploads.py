"""Key CSV uploads (``/meters/import``): a file checked, then held for the operator's go.

Only the session that sent a file may import it, for 30 minutes; at most 20 wait at once
(the oldest is forgotten first)."""

from __future__ import annotations

import datetime as dt
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from sac.store.keycsv import parse_key_csv
from sac.web.common import BadRequest, Page, arg

__all__ = ["Upload", "Uploads"]

TITLE = "Import keys"


@dataclass(slots=True)
class Upload:
    """A key CSV checked and waiting: the session's CSRF token, its name, its rows."""

    csrf: str
    name: str
    rows: list[Any]
    until: dt.datetime


def _refused(error: str, status: int) -> Page:
    return Page("import.html", dict(title=TITLE, stage="upload", error=error), status)


class Uploads:
    """The uploads waiting for their go, by a random id."""

    def __init__(self) -> None:
        self._waiting: OrderedDict[str, Upload] = OrderedDict()

    def forget_old(self, now: dt.datetime) -> None:
        for key in [k for k, u in self._waiting.items() if u.until <= now]:
            del self._waiting[key]
        while len(self._waiting) > 20:
            self._waiting.popitem(last=False)

    def take(self, key: str, csrf: str) -> Upload:
        """The upload ``key`` of the session of ``csrf`` (no more waiting); BadRequest when
        there is none (another session's is left alone)."""
        upload = self._waiting.get(key)
        if upload is None or upload.csrf != csrf:
            raise BadRequest("this upload is not waiting any more; upload the file again")
        del self._waiting[key]
        return upload

    def check(self, request: Any, csrf: str, now: dt.datetime, max_upload: int) -> Page:
        """The page of a file sent: refused (empty, too large, not UTF-8, rows in error), or
        its preview, the file then waiting for the go."""
        content = (request.args.get(b"file") or [b""])[0]
        if not content:
            return _refused("Choose a CSV file to upload.", 400)
        if len(content) > max_upload:
            return _refused(f"The file is larger than {max_upload // 2**20} MB.", 413)
        try:
            text = content.decode("utf-8-sig")
        except UnicodeDecodeError:
            return _refused("The file is not UTF-8 text: save it as CSV UTF-8 and try again.", 400)
        name = arg(request, "filename") or "keys.csv"
        rows, errors = parse_key_csv(text)
        if errors:
            values = dict(stage="errors", errors=errors, rows=len(rows) + len(errors))
            return Page("import.html", dict(title=TITLE, name=name, **values), 422)
        upload_id = secrets.token_urlsafe(16)
        self._waiting[upload_id] = Upload(csrf, name, rows, now + dt.timedelta(minutes=30))
        return Page(
            "import.html",
            dict(
                title=TITLE,
                stage="preview",
                name=name,
                upload=upload_id,
                count=len(rows),
                sample=rows[:20],
            ),
        )
