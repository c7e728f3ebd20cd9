"""Commands on a data dir that a server owns go through that server (see :mod:`rag.owner`).

:func:`owner_client` says whether a command must go through the owner and opens
an HTTP client to it; the commands then print what the server answers, which is
exactly what they print when run locally (the HTTP bodies are the CLI's JSON).
Errors the server answers with (``{"error": {"type", "message", "hint"}}``)
become the same :mod:`rag.errors` exception they were on the server, so the
exit code is the same too.

Keys: the owner record never holds one. When it says the server wants a key
(``"auth": true``), the command sends the key from its own settings:
``RAG_API__API_KEY``, else ``RAG_API__WRITE_KEY`` for writes or
``RAG_API__READ_KEY`` for reads.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import httpx

from rag import errors
from rag.errors import BackendError, ConfigError, RagError
from rag.owner import OwnerRecord, current_owner, owned_error
from rag.settings import Settings

Scope = Literal["read", "write"]

CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 600.0
POLL_S = 0.2
#: How long Ctrl-C on an ingest through the server waits for the cancelled job to stop.
CANCEL_WAIT_S = 30.0
PAGE = 10_000


def owner_of(settings: Settings) -> OwnerRecord | None:
    """The live owner of the settings' data dir (None when nobody owns it)."""
    if not settings.data_dir.exists():
        return None
    return current_owner(settings.data_dir)


def owner_client(settings: Settings, scope: Scope, *, doing: str) -> OwnerClient | None:
    """A client to the server that owns the data dir, or None when the command runs here.

    An ingest that owns the data dir lets reads run here (read-only); a write fails in one
    line that names the owner."""
    owner = owner_of(settings)
    if owner is None:
        return None
    if owner.kind != "server" or not owner.url:
        if scope == "read":
            return None
        raise owned_error(settings.data_dir, owner, doing=doing)
    return OwnerClient(owner, settings, scope)


class OwnerClient:
    """HTTP calls to the owning server, errors translated back to :mod:`rag.errors`."""

    def __init__(self, owner: OwnerRecord, settings: Settings, scope: Scope) -> None:
        self.owner = owner
        self.data_dir = settings.data_dir
        api = settings.api
        key = api.api_key or (api.write_key if scope == "write" else (api.read_key or api.write_key))
        if owner.auth and not key:
            raise ConfigError(
                f"{settings.data_dir} is served by {owner.describe()}, which wants a key",
                hint="set RAG_API__API_KEY (or RAG_API__READ_KEY / RAG_API__WRITE_KEY) to the server's key",
            )
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        assert owner.url is not None
        self.http = httpx.Client(
            base_url=owner.url,
            headers=headers,
            timeout=httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
            trust_env=False,  # a loopback server must not be reached through a proxy
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> OwnerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ------------------------------------------------------------------------------------

    def _unreachable(self, exc: Exception) -> RagError:
        return BackendError(
            f"{self.data_dir} is owned by {self.owner.describe()}, which does not answer ({type(exc).__name__})",
            hint="wait for it, or stop it: once it is gone commands run here again",
        )

    def _raise_for(self, reply: httpx.Response) -> None:
        if reply.status_code < 400:
            return
        try:
            err = reply.json()["error"]
            kind, message, hint = str(err["type"]), str(err["message"]), err.get("hint")
        except (ValueError, KeyError, TypeError):
            raise BackendError(f"the server answered HTTP {reply.status_code}") from None
        if reply.status_code in (401, 403):
            raise ConfigError(
                f"the server at {self.owner.url} refused the key: {message}",
                hint="set RAG_API__API_KEY (or RAG_API__READ_KEY / RAG_API__WRITE_KEY) to the server's key",
            )
        cls = errors.error_class(kind)
        if cls is None:
            cls = errors.InputError if reply.status_code < 500 else BackendError
        raise cls(message, hint=hint)

    def call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            reply = self.http.request(method, path, **kw)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        self._raise_for(reply)
        return reply.json()

    # -- commands ------------------------------------------------------------------------------------

    def search(self, query: str, k: int, mode: str) -> dict[str, Any]:
        body: dict[str, Any] = self.call("POST", "/v1/search", json={"query": query, "k": k, "mode": mode})
        return body

    def ask(self, question: str, k: int | None, no_llm: bool) -> dict[str, Any]:
        body: dict[str, Any] = self.call(
            "POST", "/v1/ask", json={"question": question, "k": k, "no_llm": no_llm, "stream": False}
        )
        return body

    def ask_stream(
        self, question: str, k: int | None, no_llm: bool, history: list[dict[str, str]] | None = None
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """``(event, data)`` of the server-sent events of ``POST /v1/ask`` with ``stream``
        (``history``: the earlier turns of a conversation, oldest first)."""
        payload: dict[str, Any] = {"question": question, "k": k, "no_llm": no_llm, "stream": True}
        if history:
            payload["history"] = history
        try:
            with self.http.stream("POST", "/v1/ask", json=payload) as reply:
                if reply.status_code >= 400:
                    reply.read()
                    self._raise_for(reply)
                event, data = "message", []
                for line in reply.iter_lines():
                    if line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:"):
                        data.append(line[5:].strip())
                    elif not line and data:
                        yield event, json.loads("\n".join(data))
                        event, data = "message", []
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None

    def documents(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        while True:
            page = self.call("GET", "/v1/documents", params={"offset": len(rows), "limit": PAGE})
            rows.extend(page["documents"])
            if len(rows) >= page["total"] or not page["documents"]:
                return rows

    def ingest(
        self,
        paths: list[Path],
        *,
        include: list[str],
        exclude: list[str],
        no_redact: bool,
        progress: Callable[[int, int, str], None] | None = None,
    ) -> dict[str, Any]:
        """Run an ingest as a job of the server; its result (the `rag ingest --json` object)."""
        for p in paths:
            if not p.exists():
                raise errors.InputError(f"path not found: {p}", hint="check the path; nothing was ingested")
        job = self.call(
            "POST",
            "/v1/ingest",
            json={
                "paths": [str(p.expanduser().resolve()) for p in paths],
                "include": include,
                "exclude": exclude,
                "no_redact": no_redact,
            },
        )
        return self.wait(job, progress, cancel_on_interrupt=True)

    def cancel(self, job_id: str, wait_s: float = CANCEL_WAIT_S) -> dict[str, Any] | None:
        """Cancel the job on the server and wait up to ``wait_s`` for it to stop (it stops after its
        current file or dense batch); the job as last seen, None when the server did not answer."""
        try:
            job: dict[str, Any] = self.call("POST", f"/v1/jobs/{job_id}/cancel")
            deadline = time.monotonic() + wait_s
            while job["status"] in ("queued", "running") and time.monotonic() < deadline:
                time.sleep(POLL_S)
                job = self.call("GET", f"/v1/jobs/{job_id}")
        except (RagError, KeyboardInterrupt):  # a second Ctrl-C, or the server went away: stop waiting
            return None
        return job

    def wait(
        self,
        job: dict[str, Any],
        progress: Callable[[int, int, str], None] | None = None,
        *,
        cancel_on_interrupt: bool = False,
    ) -> dict[str, Any]:
        """Poll ``job`` until it ends; its result, or its error raised. With ``cancel_on_interrupt``,
        Ctrl-C (KeyboardInterrupt) here cancels the job on the server first (see :meth:`cancel`)."""
        try:
            while job["status"] in ("queued", "running"):
                if progress is not None and job.get("progress"):
                    progress(job["progress"].get("done", 0), job["progress"].get("total", 0), "")
                time.sleep(POLL_S)
                job = self.call("GET", f"/v1/jobs/{job['id']}")
        except KeyboardInterrupt:
            if cancel_on_interrupt:
                self.cancel(job["id"])
            raise
        if job["status"] == "failed":
            err = job.get("error") or {}
            cls = errors.error_class(str(err.get("type"))) or RagError
            raise cls(str(err.get("message", "the job failed")), hint=err.get("hint"))
        result: dict[str, Any] = job["result"]
        return result

    def delete(self, doc_id: str) -> dict[str, Any]:
        try:
            reply = self.http.delete(f"/v1/documents/{doc_id}")
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        self._raise_for(reply)
        body: dict[str, Any] = reply.json()
        if reply.status_code == 202:  # still running after the server's wait: poll the job
            body = self.wait(body)
        return body
