"""Ollama adapter over the official ``ollama`` Python client: streamed chat, ``show`` for the
context length, ``list``, ``pull`` and ``embed``.

The client speaks the protocol; the adapter adds what the client leaves to its
caller:

- **two timeouts.** The client has one httpx timeout per request, while a
  streamed reply needs a long wait for the first token (a cold model load) and a
  short one between tokens (a stall). The client's stream is iterated in a
  reader thread and the caller waits with the timeout of the current phase
  (:func:`rag.llm._http.stream_lines`); stopping early shuts the socket down,
  found through an httpx response hook.
- **retries strictly before the first token** (refused connection, HTTP
  502/503/504), with exponential backoff, so no piece is ever seen twice.
- **one-line errors** from the ``LLMError`` family in :mod:`rag.errors` instead of
  the client's ``ResponseError``, ``ConnectionError`` and httpx exceptions.
- **``num_ctx`` on every request** (below).

Context window. Ollama's default ``num_ctx`` is small (2048 or 4096 tokens
depending on the version) and longer prompts are silently cut from the front,
so every request sends ``options.num_ctx``: the configured value, else the
model's own, read once per model with ``show``: a ``num_ctx`` set in its
Modelfile (the model author's or user's choice), else the trained length
``model_info["<arch>.context_length"]`` capped at ``num_ctx_max``.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import httpx

from rag.errors import (
    ConfigError,
    LLMError,
    LLMStreamError,
    LLMTimeoutError,
    LLMUnavailableError,
    ModelNotFoundError,
)
from rag.llm._http import DONE, Done, StreamReader, Timeouts, check_url, error_text, stream_lines
from rag.llm.base import ChatMessage, ModelIdentity
from rag.settings import LLMSettings

DEFAULT_CONTEXT = 4096  # when show names no context length at all
_RETRY_STATUS = {502, 503, 504}
_STATS = (
    "done_reason",
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
)
T = TypeVar("T")


def _ollama() -> Any:
    try:
        import ollama
    except ImportError as exc:  # a declared dependency: only a broken install lacks it
        raise ConfigError("the Ollama backend needs the `ollama` package", hint="pip install ollama") from exc
    return ollama


def parse_show_context(show: dict[str, Any]) -> tuple[int | None, int | None]:
    """``(modelfile_num_ctx, trained_context_length)`` from a ``show`` reply (None when absent)."""
    explicit: int | None = None
    params = show.get("parameters")
    if isinstance(params, str):
        m = re.search(r"^\s*num_ctx\s+(\d+)\s*$", params, flags=re.MULTILINE)
        if m:
            explicit = int(m.group(1))
    trained: int | None = None
    info = show.get("model_info")
    if isinstance(info, dict):
        arch = info.get("general.architecture")
        value = info.get(f"{arch}.context_length") if arch else None
        if value is None:
            value = next((v for k, v in info.items() if k.endswith(".context_length")), None)
        if isinstance(value, int | float) and value > 0:
            trained = int(value)
    return explicit, trained


def choose_num_ctx(explicit: int | None, trained: int | None, cap: int) -> int:
    """The window to request: the Modelfile's ``num_ctx`` (never above the trained length),
    else the trained length capped at ``cap``, else :data:`DEFAULT_CONTEXT`."""
    if explicit is not None:
        return min(explicit, trained) if trained else explicit
    if trained is not None:
        return min(trained, cap)
    return min(DEFAULT_CONTEXT, cap)


def _is_json_error(body: str) -> bool:
    try:
        obj = json.loads(body)
    except ValueError:
        return False
    return isinstance(obj, dict) and "error" in obj


def _is_json_response(response: httpx.Response) -> bool:
    return "json" in response.headers.get("content-type", "")


class _ChatReader(StreamReader):
    """Iterates the client's streamed chat in the reader thread; parts go on the queue as
    ``ChatResponse`` objects, HTTP errors as ``("status", (code, body))``."""

    def __init__(self, llm: OllamaLLM, request: dict[str, Any]) -> None:
        super().__init__()
        self.llm = llm
        self.request = request
        self.error_json = True

    def attach(self, response: httpx.Response) -> None:
        self.error_json = _is_json_response(response)
        super().attach(response)

    def produce(self) -> None:
        ollama = _ollama()
        self.llm._local.reader = self
        stream = self.llm._stream_client.chat(stream=True, **self.request)
        try:
            for part in stream:
                if self.stopping:
                    return
                self.items.put(("line", part))
            self.items.put(("end", None))
        except ollama.ResponseError as exc:
            if exc.status_code < 0:  # an error line inside the stream
                raise LLMStreamError(f"Ollama reported an error: {error_text(str(exc.error))}") from None
            body = json.dumps({"error": exc.error}) if self.error_json else str(exc.error)
            self.items.put(("status", (exc.status_code, body)))
        except json.JSONDecodeError as exc:
            raise LLMStreamError(f"Ollama sent a line that is not JSON: {exc.doc[:80]!r}") from None
        except ValueError as exc:  # a JSON line the client's types reject
            raise LLMStreamError(f"Ollama sent an unexpected line: {error_text(str(exc))[:120]}") from None
        finally:
            stream.close()
            self.llm._local.reader = None


class OllamaLLM(ModelIdentity):
    """Chat with one model on an Ollama server. One instance may serve several threads;
    ``last_stats`` (Ollama's counts from the final part) then belongs to whichever stream ended last.

    ``format`` (``"json"`` or a JSON schema) asks Ollama for constrained output on every chat.
    """

    backend = "ollama"
    what = "Ollama"

    def __init__(self, settings: LLMSettings, *, format: str | dict[str, Any] | None = None) -> None:
        ollama = _ollama()
        self.settings = settings
        self.model: str = settings.model
        self.url = check_url(settings.url, "Ollama")
        self.format = format
        self.timeouts = t = Timeouts(
            connect=settings.connect_timeout_s,
            first_token=settings.first_token_timeout_s,
            read=settings.read_timeout_s,
        )
        self.last_stats: dict[str, Any] = {}
        self._local = threading.local()
        hooks = {"response": [self._on_response]}
        # Streams (chat, pull, embed of a batch on a cold model) wait up to the first-token timeout;
        # the phase timeouts are enforced by stream_lines, this is only a backstop.
        self._stream_client = ollama.Client(self.url, timeout=t.httpx(), event_hooks=hooks)
        small = httpx.Timeout(connect=t.connect, read=t.read, write=t.connect, pool=t.connect)
        self._client = ollama.Client(self.url, timeout=small, event_hooks=hooks)

    def _on_response(self, response: httpx.Response) -> None:
        reader = getattr(self._local, "reader", None)
        if reader is not None:
            reader.attach(response)
        self._local.error_json = _is_json_response(response)

    # -- errors ------------------------------------------------------------------------------------

    def _unavailable(self, exc: Exception) -> LLMUnavailableError:
        return LLMUnavailableError(
            f"cannot reach Ollama at {self.url}",
            hint="start it with `ollama serve` or check RAG_LLM__URL",
        )

    def _map_status(self, code: int, body: str, model: str | None = None) -> LLMError:
        msg = error_text(body)
        model = model or self.model
        if code == 404 and not _is_json_error(body):
            return LLMStreamError(
                f"HTTP 404 from {self.url}: {msg}", hint="is this an Ollama server? check RAG_LLM__URL"
            )
        if code == 404:
            return ModelNotFoundError(
                f"model {model} is not pulled on the Ollama server at {self.url}",
                hint=f"run `ollama pull {model}`",
            )
        return LLMStreamError(f"Ollama replied HTTP {code}: {msg}")

    def _call(self, fn: Callable[[], T], what_for: str, model: str | None = None) -> T:
        """One request through the client, retried on refused connections and busy replies,
        with the client's exceptions turned into the ``LLMError`` family."""
        ollama = _ollama()
        attempt = 0
        while True:
            retry = False
            try:
                return fn()
            except (ConnectionError, httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if attempt >= self.settings.retries:
                    raise self._unavailable(exc) from None
                retry = True
            except ollama.ResponseError as exc:
                if exc.status_code in _RETRY_STATUS and attempt < self.settings.retries:
                    retry = True
                else:
                    json_body = getattr(self._local, "error_json", True)
                    body = json.dumps({"error": exc.error}) if json_body else str(exc.error)
                    raise self._map_status(exc.status_code, body, model) from None
            except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
                raise ConfigError(f"invalid LLM URL: {exc}") from None
            except httpx.TimeoutException:
                raise LLMTimeoutError(f"Ollama did not answer {what_for} at {self.url} in time") from None
            except httpx.TransportError as exc:
                raise LLMStreamError(f"Ollama dropped the connection ({what_for}): {exc}") from None
            except ValueError:  # JSON or the client's types
                raise LLMStreamError(
                    f"Ollama sent a reply to {what_for} that is not what it should be"
                ) from None
            if retry:
                time.sleep(self.settings.retry_backoff_s * (2**attempt))
                attempt += 1

    # -- the LLM protocol --------------------------------------------------------------------------

    def _lookup_context_length(self) -> int:
        try:
            show = self._call(lambda: self._client.show(self.model), "show")
        except ModelNotFoundError as exc:
            with contextlib.suppress(LLMError):
                pulled = self.list_models()
                exc.hint = f"{exc.hint}; pulled: {', '.join(pulled[:8]) or 'none'}"
            raise
        reply = {"parameters": show.parameters, "model_info": dict(show.modelinfo or {})}
        return choose_num_ctx(*parse_show_context(reply), self.settings.num_ctx_max)

    def stream_chat(self, messages: Sequence[ChatMessage]) -> Iterator[str]:
        num_ctx = self.context_length()
        request: dict[str, Any] = {
            "model": self.model,
            "messages": [dict(m) for m in messages],
            "options": {
                "num_ctx": num_ctx,
                "num_predict": self.settings.max_tokens,
                "temperature": self.settings.temperature,
            },
        }
        if self.format is not None:
            request["format"] = self.format
        self.last_stats = {}
        return stream_lines(
            lambda: _ChatReader(self, request),
            self._parse_part,
            timeouts=self.timeouts,
            retries=self.settings.retries,
            backoff_s=self.settings.retry_backoff_s,
            unavailable=self._unavailable,
            map_status=self._map_status,
            what=self.what,
        )

    def _parse_part(self, part: Any) -> str | None:
        if part.done:
            self.last_stats = {k: getattr(part, k) for k in _STATS if getattr(part, k, None) is not None}
            tail = part.message.content or ""
            return Done(tail) if tail else DONE
        # A thinking model streams its reasoning under "thinking": it shows the model is
        # generating (so it ends the first-token wait) but is not part of the answer.
        return str(part.message.content or "")

    def close(self) -> None:
        self._stream_client.close()
        self._client.close()

    # -- extras ------------------------------------------------------------------------------------

    def list_models(self) -> list[str]:
        """Names of the models pulled on the server."""
        reply = self._call(self._client.list, "list")
        return [str(m.model) for m in reply.models if m.model]

    def pull(self, model: str | None = None, progress: Callable[[str, int, int], None] | None = None) -> None:
        """Pull ``model`` (default: the configured one); ``progress(status, completed, total)``
        follows the download."""
        name = model or self.model

        def run() -> None:
            for part in self._stream_client.pull(name, stream=True):
                if progress is not None:
                    progress(str(part.status or ""), int(part.completed or 0), int(part.total or 0))

        self._call(run, f"pull {name}", name)

    def embed(self, texts: Sequence[str], model: str | None = None) -> list[list[float]]:
        """One vector per text from an embedding model on the server (default: the configured one)."""
        name = model or self.model
        reply = self._call(
            lambda: self._stream_client.embed(model=name, input=list(texts), truncate=True),
            f"embed {name}",
            name,
        )
        return [list(map(float, v)) for v in reply.embeddings]
