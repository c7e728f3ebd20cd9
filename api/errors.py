"""Errors at the HTTP edge: the :mod:`rag.errors` hierarchy mapped to status codes and one JSON body.

Every error response has the same shape (also what OpenAI clients expect)::

    {"error": {"type": "not_found", "message": "one line", "hint": "what to do" | null}}

plus ``details`` (the failed fields) for validation errors. No stack trace ever
reaches a response body: an unexpected exception is logged with its traceback
and answered with a generic 500.

=======================================  ======
``NotFoundError``                        404
``ConflictError``                        409
``FileTooLargeError``                    413
``InputError``, ``DocumentError``        422
``LLMStreamError`` (bad upstream reply)  502
``LLMTimeoutError``                      504
``StoreError`` (``StoreLockedError``),   503
``BackendError`` (LLM unavailable,
model not pulled, missing dependency),
``ConfigError`` (server misconfigured)
anything else                            500
=======================================  ======
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from rag.errors import (
    BackendError,
    ConfigError,
    ConflictError,
    DocumentError,
    FileTooLargeError,
    InputError,
    LLMStreamError,
    LLMTimeoutError,
    NotFoundError,
    RagError,
    StoreError,
    error_kind,
)

log = logging.getLogger("rag.api")

# Most specific first: the first class an error is an instance of decides its status.
STATUS_BY_ERROR: tuple[tuple[type[RagError], int], ...] = (
    (NotFoundError, 404),
    (ConflictError, 409),
    (FileTooLargeError, 413),
    (InputError, 422),
    (DocumentError, 422),
    (LLMStreamError, 502),
    (LLMTimeoutError, 504),
    (StoreError, 503),
    (BackendError, 503),
    (ConfigError, 503),
)

_HTTP_TYPES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
}


class ApiError(StarletteHTTPException):
    """An error that exists only at the HTTP edge (authentication, request size).

    An HTTPException subclass, so that FastAPI lets it through when it is raised
    while the request body is read (it turns other errors there into a 400)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        hint: str | None = None,
        type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(status, message, dict(headers or {}))
        self.status = status
        self.message = message
        self.hint = hint
        self.type = type or _HTTP_TYPES.get(status, "error")
        self.headers = dict(headers or {})


def status_for(exc: RagError) -> int:
    for cls, status in STATUS_BY_ERROR:
        if isinstance(exc, cls):
            return status
    return 500


def error_type(exc: RagError) -> str:
    """``NotFoundError`` -> ``not_found``, ``LLMUnavailableError`` -> ``llm_unavailable``."""
    return error_kind(exc)


def error_body(
    type: str, message: str, hint: str | None = None, details: Sequence[Any] | None = None
) -> dict[str, Any]:
    err: dict[str, Any] = {"type": type, "message": message, "hint": hint}
    if details is not None:
        err["details"] = list(details)
    return {"error": err}


def rag_error_body(exc: RagError) -> dict[str, Any]:
    return error_body(error_type(exc), str(exc).strip().replace("\n", " "), exc.hint)


def rag_error_response(exc: RagError) -> JSONResponse:
    status = status_for(exc)
    headers = {"Retry-After": "5"} if status == 503 else None
    if status >= 500:
        log.warning("%s: %s", type(exc).__name__, exc.one_line())
    return JSONResponse(rag_error_body(exc), status_code=status, headers=headers)


def internal_error_body() -> dict[str, Any]:
    return error_body("internal_error", "internal server error", "see the server log")


def validation_details(errors: Sequence[Any]) -> list[dict[str, Any]]:
    out = []
    for e in errors:
        out.append(
            {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": e.get("type")}
        )
    return out


def validation_message(details: Sequence[Mapping[str, Any]]) -> str:
    parts = []
    for d in details[:5]:
        loc = ".".join(str(p) for p in d["loc"] if p != "body") or "body"
        parts.append(f"{loc}: {d['msg']}")
    more = f" (and {len(details) - 5} more)" if len(details) > 5 else ""
    return "; ".join(parts) + more


def invalid(loc: Sequence[str], msg: str, type: str = "value_error") -> RequestValidationError:
    """A 422 for a rule checked in the endpoint (limits that come from settings)."""
    return RequestValidationError([{"loc": tuple(loc), "msg": msg, "type": type}])


def install_error_handlers(app: FastAPI) -> None:
    async def on_rag_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RagError)
        return rag_error_response(exc)

    async def on_api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return JSONResponse(
            error_body(exc.type, exc.message, exc.hint), status_code=exc.status, headers=exc.headers
        )

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        details = validation_details(exc.errors())
        return JSONResponse(
            error_body("validation_error", validation_message(details), None, details), status_code=422
        )

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        return JSONResponse(
            error_body(_HTTP_TYPES.get(exc.status_code, "error"), message),
            status_code=exc.status_code,
            headers=dict(exc.headers or {}),
        )

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse(internal_error_body(), status_code=500)

    app.add_exception_handler(RagError, on_rag_error)
    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)
