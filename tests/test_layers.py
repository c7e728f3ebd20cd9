"""The house rules between packages, read from the source: `rag` imports none of the edges, and
`api` (transport: routing, schemas, auth) uses only public names of `rag`."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def modules(package: str) -> Iterator[tuple[Path, ast.Module]]:
    for path in sorted((ROOT / package).rglob("*.py")):
        yield path, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def imported(tree: ast.Module) -> Iterator[tuple[str, list[str]]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module, [alias.name for alias in node.names]


def test_rag_imports_none_of_the_edges() -> None:
    bad = [
        f"{path.relative_to(ROOT)}: {module}"
        for path, tree in modules("rag")
        for module, _ in imported(tree)
        if module.split(".")[0] in {"ingest", "api", "eval", "cli"}
    ]
    assert bad == []


def test_api_uses_no_private_name_of_rag() -> None:
    bad = []
    for path, tree in modules("api"):
        for module, names in imported(tree):
            if module.split(".")[0] == "rag":
                bad += [
                    f"{path.relative_to(ROOT)}: {module}.{n}"
                    for n in names
                    if n.startswith("_") and not n.startswith("__")
                ]
                bad += [
                    f"{path.relative_to(ROOT)}: {module}"
                    for part in module.split(".")
                    if part.startswith("_")
                ]
        for node in ast.walk(tree):  # engine._legs, store._db, ...
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and not (isinstance(node.value, ast.Name) and node.value.id in {"self", "cls"})
            ):
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: .{node.attr}")
    assert bad == []


def test_publishing_lives_in_the_core() -> None:
    from api import serving as moved
    from rag import serving

    assert moved.ServingEngine is serving.ServingEngine
    assert "Consistency lives here" in (serving.__doc__ or "")
    assert len((ROOT / "api" / "serving.py").read_text(encoding="utf-8").splitlines()) < 12
