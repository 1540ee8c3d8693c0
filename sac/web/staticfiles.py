"""The pages' few static files (``/static/``).

Twisted's own File resource is not used: its module logs deprecation warnings when
imported, and it lists directories."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.web.pages import notFound
from twisted.web.resource import Resource

__all__ = ["STATIC", "StaticFiles"]

STATIC = Path(__file__).resolve().parent / "static"

# the static files' types
TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}


class StaticFiles(Resource):
    """The files of a folder, read once and served with their type and a cache lifetime;
    any other path (a directory, a dot segment, a missing file) is a 404."""

    isLeaf = True

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.files = {
            entry.name: (entry.read_bytes(), TYPES[entry.suffix])
            for entry in folder.iterdir()
            if entry.is_file() and entry.suffix in TYPES
        }

    def render_GET(self, request: Any) -> bytes:
        name = b"/".join(request.postpath).decode("utf-8", "replace")
        found = self.files.get(name)
        if found is None:
            return notFound().render(request)
        body, kind = found
        request.setHeader(b"content-type", kind.encode())
        request.setHeader(b"cache-control", b"public, max-age=3600")
        return body
