"""Routes of the web page and of the offline ``/docs``; :func:`install` adds them to an app."""

from __future__ import annotations

import html
import importlib.resources
import importlib.util
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.staticfiles import StaticFiles

from api.errors import ApiError
from api.routers import sources

STATIC_DIR = Path(__file__).resolve().parent / "static"
View = Literal["ask", "search", "documents"]

#: The page loads nothing from anywhere but the app (inline scripts and styles are refused too).
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
#: Swagger UI's page starts it with an inline script; everything it loads still comes from the app.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'"
)
SWAGGER_FILES = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon.png": "image/png",
}

router = APIRouter(include_in_schema=False)


def page_html(view: View) -> str:
    template = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    return template.replace("{{view}}", html.escape(view))


def _page(view: View) -> HTMLResponse:
    return HTMLResponse(
        page_html(view),
        headers={"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-cache"},
    )


@router.get("/")
def ask_page() -> HTMLResponse:
    return _page("ask")


@router.get("/search")
def search_page() -> HTMLResponse:
    return _page("search")


@router.get("/documents")
def documents_page() -> HTMLResponse:
    return _page("documents")


def swagger_asset(name: str) -> bytes | None:
    """A file of the Swagger UI that the installed ``fastapi-offline`` package ships, or None."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "static" / name
    return path.read_bytes() if path.is_file() else None


@router.get("/docs/assets/{name}")
def docs_asset(name: str) -> Response:
    media = SWAGGER_FILES.get(name)
    data = swagger_asset(name) if media else None
    if data is None:
        raise ApiError(404, f"no such file: {name}")
    return Response(data, media_type=media, headers={"Cache-Control": "public, max-age=86400"})


def docs_page(app: FastAPI) -> HTMLResponse:
    if swagger_asset("swagger-ui-bundle.js") is None:
        body = (
            "<!doctype html><meta charset=utf-8><title>API docs</title>"
            "<p>Swagger UI is not installed (<code>pip install fastapi-offline</code>). "
            f'The OpenAPI description is at <a href="{html.escape(app.openapi_url or "")}">'
            f"{html.escape(app.openapi_url or '')}</a>.</p>"
        )
        return HTMLResponse(body, headers={"Content-Security-Policy": DOCS_CSP})
    page = get_swagger_ui_html(
        openapi_url=app.openapi_url or "/openapi.json",
        title=f"{app.title} - API",
        swagger_js_url="/docs/assets/swagger-ui-bundle.js",
        swagger_css_url="/docs/assets/swagger-ui.css",
        swagger_favicon_url="/docs/assets/favicon.png",
        oauth2_redirect_url=app.swagger_ui_oauth2_redirect_url,
        # no badge fetched from validator.swagger.io
        swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": False},
    )
    page.headers["Content-Security-Policy"] = DOCS_CSP
    return page


def install(app: FastAPI) -> None:
    """Add the page, its static files, the source view endpoint and an offline ``/docs`` (in place
    of FastAPI's, which loads Swagger UI from a CDN; ReDoc, which has no offline copy, is dropped)."""
    replaced = {app.docs_url, app.redoc_url} - {None}
    app.router.routes[:] = [r for r in app.router.routes if not _path_in(r, replaced)]
    app.include_router(sources.router)
    app.include_router(router)
    if app.openapi_url:

        async def docs(_: object) -> HTMLResponse:
            return docs_page(app)

        app.router.routes.append(Route("/docs", docs, methods=["GET"], include_in_schema=False))
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")


def _path_in(route: BaseRoute, paths: set[str | None]) -> bool:
    return isinstance(route, Route) and route.path in paths


def static_files() -> list[str]:
    """Names of the page's static files (what the package must ship)."""
    return sorted(
        p.name for p in importlib.resources.files("api.web").joinpath("static").iterdir() if p.is_file()
    )
