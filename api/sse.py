"""Server-sent events from a blocking generator, stopped when the client goes away.

Each step of the generator (retrieval, waiting for the model's next token) runs
in a worker thread, never on the event loop. A task watches for the client's
disconnect and cancels the stream; the generator is then closed (in a thread,
shielded from the cancellation), which runs its ``finally`` blocks: the answer
generator closes the model's HTTP stream, so the model server stops generating.
The stop takes effect when the step in progress returns (the next token, or a
read timeout when the model stalls), since a running generator cannot be
interrupted from outside.

An error raised before the first event becomes an ordinary JSON error response
with its status code; after that the status line is gone, so the error is sent
as one last event (``on_error``) and the stream ends.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Generator, Iterator
from typing import Any, TypeVar

import anyio
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from api.errors import internal_error_body, rag_error_body, rag_error_response
from rag.errors import RagError

log = logging.getLogger("rag.api")

_END = object()
T = TypeVar("T")


def sse_event(data: str, event: str | None = None) -> bytes:
    """One event: ``event: NAME`` (optional) and ``data:`` lines, then a blank line."""
    lines = [f"event: {event}"] if event else []
    lines += [f"data: {line}" for line in data.split("\n")]
    return ("\n".join(lines) + "\n\n").encode("utf-8")


@contextlib.contextmanager
def closing_iterator(it: Iterator[T]) -> Iterator[Iterator[T]]:
    """Use ``it`` and close it afterwards when it can be closed (a generator's ``finally`` then runs)."""
    try:
        yield it
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()


def _step(gen: Generator[bytes, None, None]) -> Any:
    try:
        return next(gen)
    except StopIteration:
        return _END


class EventStream(Response):
    media_type = "text/event-stream"

    def __init__(
        self,
        events: Generator[bytes, None, None],
        on_error: Callable[[dict[str, Any]], bytes],
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.events = events
        self.on_error = on_error
        self.status_code = 200
        self.background = None
        self.init_headers({"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **(headers or {})})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as tg:

                async def watch() -> None:
                    while True:
                        message = await receive()
                        if message["type"] == "http.disconnect":
                            tg.cancel_scope.cancel()
                            return

                tg.start_soon(watch)
                await self._stream(scope, receive, send)
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self.events.close)

    async def _stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            first = await anyio.to_thread.run_sync(_step, self.events)
        except RagError as exc:
            await rag_error_response(exc)(scope, receive, send)
            return
        except Exception:
            log.exception("error before the first event")
            await JSONResponse(internal_error_body(), status_code=500)(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        item = first
        try:
            while item is not _END:
                await send({"type": "http.response.body", "body": item, "more_body": True})
                item = await anyio.to_thread.run_sync(_step, self.events)
        except RagError as exc:
            await send(
                {"type": "http.response.body", "body": self.on_error(rag_error_body(exc)), "more_body": True}
            )
        except OSError:
            return  # the client is gone
        except Exception:
            log.exception("error while streaming")
            await send(
                {
                    "type": "http.response.body",
                    "body": self.on_error(internal_error_body()),
                    "more_body": True,
                }
            )
        await send({"type": "http.response.body", "body": b"", "more_body": False})
