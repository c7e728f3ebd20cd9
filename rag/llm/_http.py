"""Streaming HTTP for the LLM adapters: two timeouts, retries before the first token, clean cancel.

A streamed reply has two kinds of waiting: before the first token (the server
may be loading the model: minutes on a cold start) and between tokens (a
stall). httpx has a single read timeout, fixed when a response starts, so the
request runs in a reader thread that puts lines on a queue and the caller
waits on the queue with the timeout of the current phase. When the caller
gives up or stops early, the reader is told to stop and its socket is shut
down, so no thread stays blocked on a dead server for longer than the
first-token timeout.

The reader is the seam: :class:`HTTPLineReader` sends an httpx request and
queues its lines (the OpenAI-compatible adapter); the Ollama adapter's reader
iterates the official ``ollama`` client's stream and queues its parts. Both
go through :func:`stream_lines`, so the timeouts, retries and error messages
are the same whichever client speaks the protocol.

Lines are split on ``\\n`` only (NDJSON and SSE both use it): ``str.splitlines``
would also split inside a JSON string holding U+0085 or U+2028.
"""

from __future__ import annotations

import contextlib
import json
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from rag.errors import ConfigError, LLMError, LLMStreamError, LLMTimeoutError, LLMUnavailableError
from rag.llm.base import ModelIdentity


class Done(str):
    """A parser's last piece of text: the stream ends after it (``DONE`` when it is empty)."""


DONE = Done("")
# What a backend's line parser returns: text (possibly "") for a line that carries model
# output or shows the model is generating, None for a line to skip, a Done at the end.
LineParser = Callable[[Any], str | None]
# Maps an HTTP error reply (status, body text) to the exception to raise.
StatusMapper = Callable[[int, str], LLMError]

_RETRY_STATUS = {502, 503, 504}


def check_url(url: str, what: str) -> str:
    base = url.strip().rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise ConfigError(
            f"invalid {what} URL {url!r}: it must start with http:// or https://",
            hint="e.g. RAG_LLM__URL=http://127.0.0.1:11434",
        )
    return base


def error_text(body: str) -> str:
    """The server's error message from a JSON body (Ollama ``{"error": str}``, OpenAI
    ``{"error": {"message"}}``, vLLM ``{"message"}``), else the body itself, on one short line."""
    msg: Any = body
    with contextlib.suppress(ValueError):
        obj = json.loads(body)
        if isinstance(obj, dict):
            msg = obj.get("error", obj.get("message", body))
            if isinstance(msg, dict):
                msg = msg.get("message", msg)
    return " ".join(str(msg).split())[:300] or "(empty reply)"


@dataclass(slots=True)
class Timeouts:
    connect: float
    first_token: float
    read: float

    def httpx(self) -> httpx.Timeout:
        # The reader thread's own read limit is only a backstop for the queue timeouts.
        backstop = max(self.first_token, self.read) + 1.0
        return httpx.Timeout(connect=self.connect, read=backstop, write=self.connect, pool=self.connect)


class StreamReader(threading.Thread):
    """Runs one streamed request in a thread and puts ``(kind, payload)`` items on a queue:
    ``("status", (code, body))``, ``("line", payload)``, ``("end", None)`` or ``("exc", exception)``.
    A subclass's :meth:`produce` sends the request, calls :meth:`attach` with the response as
    soon as it has one (so :meth:`stop` can shut its socket down) and checks :attr:`stopping`
    between items."""

    def __init__(self) -> None:
        super().__init__(name="llm-stream", daemon=True)
        self.items: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._stop_event = threading.Event()
        self._response: httpx.Response | None = None
        self._lock = threading.Lock()

    @property
    def stopping(self) -> bool:
        return self._stop_event.is_set()

    def attach(self, response: httpx.Response) -> None:
        with self._lock:
            self._response = response

    def produce(self) -> None:
        raise NotImplementedError

    def run(self) -> None:
        try:
            self.produce()
        except Exception as exc:  # handed to the caller's thread
            self.items.put(("exc", exc))

    def stop(self) -> bool:
        """Ask the thread to end and unblock a read that waits on the socket. False when the
        thread cannot be interrupted yet (still connecting or waiting for the status line:
        its backstop timeout, just above the first-token timeout, ends it)."""
        self._stop_event.set()
        with self._lock:
            response = self._response
        if response is None:
            return False
        stream = response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        return True


class HTTPLineReader(StreamReader):
    """Sends one httpx request and puts its body's lines (``str``) on the queue."""

    def __init__(self, client: httpx.Client, request: httpx.Request) -> None:
        super().__init__()
        self.client = client
        self.request = request

    def produce(self) -> None:
        response = self.client.send(self.request, stream=True)
        self.attach(response)
        try:
            if self.stopping:
                return
            if response.status_code >= 400:
                response.read()
                self.items.put(("status", (response.status_code, response.text)))
                return
            pending = b""
            for data in response.iter_raw():
                if self.stopping:
                    return
                pending += data
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    self.items.put(("line", raw.decode("utf-8", errors="replace").rstrip("\r")))
            if pending.strip():
                self.items.put(("line", pending.decode("utf-8", errors="replace").rstrip("\r")))
            self.items.put(("end", None))
        finally:
            response.close()


def stream_lines(
    open_reader: Callable[[], StreamReader],
    parse_line: LineParser,
    *,
    timeouts: Timeouts,
    retries: int,
    backoff_s: float,
    unavailable: Callable[[Exception], LLMUnavailableError],
    map_status: StatusMapper,
    what: str,
) -> Iterator[str]:
    """Yield the text that ``parse_line`` extracts from each streamed item of the readers that
    ``open_reader`` makes (one per attempt), with the timeout, retry and error rules in the
    module docstring. A reader's ``LLMError`` is raised as it is."""
    attempt = 0
    while True:
        reader = open_reader()
        started = False  # a parsed line has arrived: no more retries, between-token timeout
        retry_reason: Exception | None = None
        reader.start()
        deadline = time.monotonic() + timeouts.first_token
        try:
            while True:
                wait = timeouts.read if started else deadline - time.monotonic()
                try:
                    kind, payload = reader.items.get(timeout=max(wait, 0.0))
                except queue.Empty:
                    if started:
                        raise LLMTimeoutError(
                            f"{what} stopped sending tokens for {timeouts.read:g} s in the middle of the answer"
                        ) from None
                    raise LLMTimeoutError(f"{what} sent no token within {timeouts.first_token:g} s") from None
                if kind == "line":
                    parsed = parse_line(payload)
                    if parsed is None:
                        continue
                    if parsed:
                        yield str(parsed)
                    if isinstance(parsed, Done):
                        return
                    started = True
                elif kind == "end":
                    raise LLMStreamError(f"{what} closed the stream before the answer was complete")
                elif kind == "status":
                    code, body = payload
                    if code in _RETRY_STATUS and attempt < retries:
                        retry_reason = LLMStreamError(f"HTTP {code}")
                        break
                    raise map_status(code, body)
                else:  # "exc"
                    exc = payload
                    if isinstance(exc, LLMError):
                        raise exc
                    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
                        if attempt < retries:
                            retry_reason = exc
                            break
                        raise unavailable(exc) from None
                    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
                        raise ConfigError(f"invalid LLM URL: {exc}") from None
                    if isinstance(exc, httpx.TimeoutException):
                        raise LLMTimeoutError(f"{what} timed out: {type(exc).__name__}") from None
                    if isinstance(exc, httpx.TransportError):
                        if not started and attempt < retries:
                            retry_reason = exc
                            break
                        where = "in the middle of the answer" if started else "before answering"
                        raise LLMStreamError(f"{what} dropped the connection {where}: {exc}") from None
                    raise LLMStreamError(f"{what}: {type(exc).__name__}: {exc}") from None
        finally:
            if reader.stop() or not reader.is_alive():
                reader.join(timeout=0.5)
        assert retry_reason is not None
        time.sleep(backoff_s * (2**attempt))
        attempt += 1


def request_json(
    client: httpx.Client,
    method: str,
    url: str,
    *,
    body: dict[str, Any] | None,
    timeout: httpx.Timeout,
    retries: int,
    backoff_s: float,
    unavailable: Callable[[Exception], LLMUnavailableError],
    map_status: StatusMapper,
    what: str,
    headers: dict[str, str] | None = None,
) -> Any:
    """A small JSON request (``/api/show``, ``/models``...) with the same error mapping."""
    attempt = 0
    while True:
        try:
            resp = client.request(method, url, json=body, timeout=timeout, headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            if attempt < retries:
                time.sleep(backoff_s * (2**attempt))
                attempt += 1
                continue
            raise unavailable(exc) from None
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise ConfigError(f"invalid LLM URL: {exc}") from None
        except httpx.TimeoutException:
            raise LLMTimeoutError(f"{what} did not answer {url} in time") from None
        except httpx.TransportError as exc:
            raise LLMStreamError(f"{what} dropped the connection: {exc}") from None
        if resp.status_code >= 400:
            if resp.status_code in _RETRY_STATUS and attempt < retries:
                time.sleep(backoff_s * (2**attempt))
                attempt += 1
                continue
            raise map_status(resp.status_code, resp.text)
        try:
            return resp.json()
        except ValueError:
            raise LLMStreamError(f"{what} sent a reply that is not JSON from {url}") from None


class HTTPChatLLM(ModelIdentity):
    """The base of an adapter that speaks HTTP itself through httpx (the OpenAI-compatible one;
    Ollama's goes through the official client): settings, one pooled client, the two-phase
    timeouts, JSON requests and streamed chats with the adapter's error mapping, and the
    per-model context-length cache. An adapter supplies ``backend``, ``what`` (its name in messages),
    ``_unavailable``, ``_map_status``, ``_parse_line`` and ``_lookup_context_length``."""

    backend = ""
    what = "the LLM server"

    def __init__(
        self,
        settings: Any,
        url_what: str,
        *,
        transport: httpx.BaseTransport | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.model: str = settings.model
        self.url = check_url(settings.url, url_what)
        self.timeouts = Timeouts(
            connect=settings.connect_timeout_s,
            first_token=settings.first_token_timeout_s,
            read=settings.read_timeout_s,
        )
        self._client = httpx.Client(transport=transport, timeout=self.timeouts.httpx(), headers=headers or {})
        self.last_stats: dict[str, Any] = {}

    # -- supplied by each adapter ------------------------------------------------------------------

    def _unavailable(self, exc: Exception) -> LLMUnavailableError:
        raise NotImplementedError

    def _map_status(self, code: int, body: str) -> LLMError:
        raise NotImplementedError

    def _parse_line(self, line: str) -> str | None:
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------------------

    def _json(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        map_status: StatusMapper | None = None,
    ) -> Any:
        t = self.timeouts
        return request_json(
            self._client,
            method,
            self.url + path,
            body=body,
            timeout=httpx.Timeout(connect=t.connect, read=t.read, write=t.connect, pool=t.connect),
            retries=self.settings.retries,
            backoff_s=self.settings.retry_backoff_s,
            unavailable=self._unavailable,
            map_status=map_status or self._map_status,
            what=self.what,
        )

    def _stream(
        self, path: str, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> Iterator[str]:
        self.last_stats = {}

        def reader() -> StreamReader:
            return HTTPLineReader(
                self._client, self._client.build_request("POST", self.url + path, json=body, headers=headers)
            )

        return stream_lines(
            reader,
            self._parse_line,
            timeouts=self.timeouts,
            retries=self.settings.retries,
            backoff_s=self.settings.retry_backoff_s,
            unavailable=self._unavailable,
            map_status=self._map_status,
            what=self.what,
        )

    def close(self) -> None:
        self._client.close()
