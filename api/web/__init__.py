"""The web page (``/``, ``/search``, ``/documents``) and offline API docs (``/docs``).

Everything the page loads is served by the app itself: its HTML, script and
style from :mod:`api.web` (package data), Swagger UI's script and style from
the installed ``fastapi-offline`` package. No page refers to a CDN or any
other origin; the pages' ``Content-Security-Policy`` forbids it.
"""

from __future__ import annotations

from api.web.router import install

__all__ = ["install"]
