"""Request limits that come from settings (``settings.api``), checked in the routes: 422 with the field."""

from __future__ import annotations

from collections.abc import Sequence

from api.errors import invalid


def check_text(loc: Sequence[str], text: str, max_chars: int) -> str:
    if not text.strip():
        raise invalid(loc, "must not be empty or blank", "string_too_short")
    if len(text) > max_chars:
        raise invalid(
            loc,
            f"is {len(text)} characters long; at most {max_chars} are accepted (RAG_API__MAX_QUESTION_CHARS)",
            "string_too_long",
        )
    return text


def check_k(loc: Sequence[str], k: int | None, max_k: int) -> int | None:
    if k is not None and k > max_k:
        raise invalid(loc, f"must be at most {max_k} (RAG_API__MAX_K)", "less_than_equal")
    return k
