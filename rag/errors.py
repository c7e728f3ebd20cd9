"""One exception hierarchy for the whole system.

Library code raises these; only the edges translate them (the CLI prints one
line and exits non-zero, the HTTP API maps them to a status code)::

    RagError                      base; ``hint`` says what the user can do
    ├── ConfigError               invalid settings or config file
    ├── InputError                bad user input (missing path, bad query)
    │   ├── NotFoundError         a named thing does not exist
    │   └── ConflictError         the request clashes with work in progress
    ├── DocumentError             one file could not be turned into text;
    │   │                         ingestion reports it and carries on
    │   ├── UnsupportedFileError  extension/format not handled
    │   ├── BinaryFileError       looks like binary data, not text
    │   ├── EncodingError         no text encoding fits the bytes
    │   ├── FileTooLargeError     over the configured size limit
    │   ├── CorruptPdfError       unreadable, truncated or damaged PDF
    │   ├── EncryptedPdfError     PDF needs a password
    │   └── NoTextLayerError      scanned PDF without extractable text
    ├── StoreError                the on-disk index state is unusable
    │   └── StoreLockedError      another writer holds the data dir
    │       └── DataDirOwnedError another process owns the data dir (rag.owner)
    └── BackendError              an external service/model failed
        ├── DependencyMissingError  an optional package is not installed
        └── LLMError              the language model server failed
            ├── LLMUnavailableError   server not reachable (refused, DNS, connect timeout)
            ├── ModelNotFoundError    the server does not have the model (not pulled)
            ├── LLMTimeoutError       no first token / no next token in time
            └── LLMStreamError        bad reply or an error in the middle of a stream
"""

from __future__ import annotations

import re
from typing import Any


class RagError(Exception):
    """Base class. ``str(err)`` is one line saying what happened."""

    exit_code = 1
    hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint

    def one_line(self) -> str:
        msg = str(self).strip().replace("\n", " ")
        return f"{msg} ({self.hint})" if self.hint else msg


class ConfigError(RagError):
    exit_code = 2


class InputError(RagError):
    exit_code = 2


class NotFoundError(InputError):
    pass


class ConflictError(InputError):
    """The request clashes with work in progress (e.g. deleting a document that is being ingested)."""


class DocumentError(RagError):
    """A single document failed; the run goes on and lists it in ``failed``."""


class UnsupportedFileError(DocumentError):
    pass


class BinaryFileError(DocumentError):
    pass


class EncodingError(DocumentError):
    pass


class FileTooLargeError(DocumentError):
    pass


class CorruptPdfError(DocumentError):
    pass


class EncryptedPdfError(DocumentError):
    hint = "remove the password (e.g. `qpdf --decrypt in.pdf out.pdf`) and re-run"


class NoTextLayerError(DocumentError):
    hint = "the PDF has no text layer (scanned?); run OCR on it first, e.g. `ocrmypdf`"


class StoreError(RagError):
    exit_code = 3


class StoreLockedError(StoreError):
    """Another process holds a store of the data dir; opening it was refused, nothing was written."""

    hint = "another process is using this data dir; wait for it to finish or use another --data-dir"


class DataDirOwnedError(StoreLockedError):
    """Another live process (a server or an ingest) owns the data dir; see :mod:`rag.owner`."""


class BackendError(RagError):
    exit_code = 4


class DependencyMissingError(BackendError):
    pass


class LLMError(BackendError):
    """The language model server failed; subclasses say how."""


class LLMUnavailableError(LLMError):
    """The server cannot be reached: nothing was sent to the model."""


class ModelNotFoundError(LLMError):
    """The server answers but does not know the configured model."""


class LLMTimeoutError(LLMError):
    hint = "raise RAG_LLM__FIRST_TOKEN_TIMEOUT_S / RAG_LLM__READ_TIMEOUT_S, or use a smaller model"


class LLMStreamError(LLMError):
    """The server replied with an error or an unreadable stream (possibly after some tokens)."""


def error_kind(err: RagError | type[RagError]) -> str:
    """The error's ``type`` in error bodies: ``NotFoundError`` -> ``not_found``,
    ``LLMUnavailableError`` -> ``llm_unavailable`` (:func:`error_class` reverses it)."""
    cls = err if isinstance(err, type) else type(err)
    name = cls.__name__.removesuffix("Error") or "rag"
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


def error_dict(err: RagError) -> dict[str, Any]:
    """``{"type", "message", "hint"}``: how an error is reported (HTTP bodies, job records)."""
    return {"type": error_kind(err), "message": str(err).strip().replace("\n", " "), "hint": err.hint}


def error_class(kind: str) -> type[RagError] | None:
    """The class whose :func:`error_kind` is ``kind`` (None when there is none)."""
    for value in globals().values():
        if isinstance(value, type) and issubclass(value, RagError) and error_kind(value) == kind:
            return value
    return None
