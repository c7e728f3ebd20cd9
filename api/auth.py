"""Bearer-token authentication and the rule about which addresses may run without it.

Keys (``settings.api``): ``api_key`` opens every endpoint; ``read_key`` opens the
read endpoints (search, ask, chat, lists); ``write_key`` opens the write
endpoints (upload, delete) and the read ones too. With no key configured at
all, nothing is checked, which :func:`check_bind` allows only on a loopback
address unless ``allow_insecure`` is set. With some key configured, a scope
that no key opens is closed (e.g. only ``read_key`` set: writes are refused).

A missing or unknown token is 401 (with ``WWW-Authenticate: Bearer``); a known
token used outside its scope is 403. Tokens are compared in constant time.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.errors import ApiError
from rag.errors import ConfigError
from rag.settings import ApiSettings

Scope = Literal["read", "write"]

bearer = HTTPBearer(
    auto_error=False,
    description="`Authorization: Bearer <key>` when the server has keys configured "
    "(RAG_API__API_KEY, or RAG_API__READ_KEY / RAG_API__WRITE_KEY).",
)


@dataclass(frozen=True, slots=True)
class Keys:
    read: tuple[bytes, ...]
    write: tuple[bytes, ...]

    @property
    def enabled(self) -> bool:
        return bool(self.read or self.write)

    @classmethod
    def from_settings(cls, api: ApiSettings) -> Keys:
        def keys(*values: str | None) -> tuple[bytes, ...]:
            return tuple(v.encode("utf-8") for v in dict.fromkeys(values) if v)

        return cls(
            read=keys(api.api_key, api.read_key, api.write_key),
            write=keys(api.api_key, api.write_key),
        )


def _known(token: bytes, keys: tuple[bytes, ...]) -> bool:
    found = False
    for key in keys:  # no early exit: the time taken does not say which key matched
        found |= hmac.compare_digest(token, key)
    return found


def authorize(keys: Keys, credentials: HTTPAuthorizationCredentials | None, scope: Scope) -> None:
    if not keys.enabled:
        return
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None or not credentials.credentials:
        raise ApiError(
            401, "missing bearer token", hint="send `Authorization: Bearer <key>`", headers=challenge
        )
    token = credentials.credentials.encode("utf-8")
    if _known(token, keys.write if scope == "write" else keys.read):
        return
    if _known(token, keys.read):
        raise ApiError(403, f"this key may not {scope}", hint="use the write key for uploads and deletes")
    raise ApiError(401, "invalid bearer token", headers=challenge)


def _keys(request: Request) -> Keys:
    keys = request.app.state.keys
    assert isinstance(keys, Keys)
    return keys


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


async def require_read(request: Request, credentials: Credentials) -> None:
    authorize(_keys(request), credentials, "read")


async def require_write(request: Request, credentials: Credentials) -> None:
    authorize(_keys(request), credentials, "write")


def is_loopback(host: str) -> bool:
    name = host.strip().strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_bind(api: ApiSettings) -> None:
    """Refuse to listen on a non-loopback address without a key (unless ``allow_insecure``)."""
    if is_loopback(api.host) or Keys.from_settings(api).enabled or api.allow_insecure:
        return
    raise ConfigError(
        f"refusing to serve on {api.host} without an API key: anyone who can reach it could read "
        "and change your documents",
        hint="set RAG_API__API_KEY (or RAG_API__READ_KEY / RAG_API__WRITE_KEY), serve on 127.0.0.1, "
        "or set RAG_API__ALLOW_INSECURE=true",
    )
