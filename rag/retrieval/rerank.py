"""Listwise re-ranking of the top hits by an LLM (off by default: ``RAG_RETRIEVAL__RERANK=llm``).

The model sees the question and the top ``depth`` passages, numbered, and answers with the
numbers best first (listwise ranking in the style of Sun et al., "Is ChatGPT Good at Search?
Investigating Large Language Models as Re-Ranking Agents", EMNLP 2023). The answer is parsed
leniently (:func:`parse_permutation`): numbers out of range or repeated are dropped, passages the
model left out keep their fused order after the ones it ranked. A failed or empty answer leaves
the fused order unchanged. Its gain could not be measured here (no instruct model that ranks
Chinese is available on these machines); its cost is one LLM call per search.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rag.errors import LLMError

if TYPE_CHECKING:
    from rag.llm.base import LLM, ChatMessage

#: Characters of each passage shown to the model.
PASSAGE_CHARS = 600

SYSTEM = (
    "You rank passages by how well they answer a question. Reply with the passage numbers only, "
    "most relevant first, separated by ' > ', e.g. [2] > [1] > [3]. Include every passage."
)


def rerank_messages(
    question: str, passages: Sequence[str], max_chars: int = PASSAGE_CHARS
) -> list[ChatMessage]:
    """The chat messages that ask for a ranking of ``passages`` (numbered from 1)."""
    blocks = "\n\n".join(f"[{i}] {' '.join(p.split())[:max_chars]}" for i, p in enumerate(passages, start=1))
    user = f"Question: {question}\n\nPassages:\n\n{blocks}\n\nRanking of all {len(passages)} passages:"
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def parse_permutation(text: str, n: int) -> list[int]:
    """0-based order of ``n`` passages from an answer such as ``[3] > [1] > [2]``: the numbers in
    order of first appearance (out of range and repeats dropped), then the ones not named, in
    their original order."""
    seen: list[int] = []
    for m in re.finditer(r"\d+", text):
        i = int(m.group()) - 1
        if 0 <= i < n and i not in seen:
            seen.append(i)
    return seen + [i for i in range(n) if i not in seen]


def llm_order(llm: LLM, question: str, passages: Sequence[str]) -> list[int]:
    """The model's order of ``passages`` (0-based); the given order when it fails or says nothing."""
    if len(passages) < 2:
        return list(range(len(passages)))
    try:
        text = "".join(llm.stream_chat(rerank_messages(question, passages)))
    except LLMError:  # the fused order stands: re-ranking is an improvement, never a failure
        return list(range(len(passages)))
    return parse_permutation(text, len(passages))
