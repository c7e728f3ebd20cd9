"""`rag graph entity|export`, `rag search --mode graph` and `rag eval --modes ...,graph` through click's runner."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import cli
from rag.engine import Engine
from rag.errors import NotFoundError
from rag.graph import describe_entity
from rag.settings import Settings
from tests.test_eval_runner import tiny
from tests.test_graph_sync import write_notes

GRAPHML = "{http://graphml.graphdrawing.org/xmlns}"


@pytest.fixture
def data(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    res = CliRunner().invoke(
        cli, ["ingest", str(write_notes(tmp_path / "notes")), "--data-dir", str(d), "--json"]
    )
    assert res.exit_code == 0, res.output
    return d


def invoke(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(cli, list(args))
    return res.exit_code, res.stdout, res.stderr


def test_entity_json_card(data: Path) -> None:
    code, out, err = invoke("graph", "entity", "DOCKER-COMMIT", "--data-dir", str(data), "--json")
    assert code == 0, err
    card = json.loads(out)
    assert {"name", "aliases", "mentions", "neighbours", "documents"} <= set(card)
    assert card["name"] == "docker commit" and card["kind"] == "command"
    assert card["documents"] == ["docker/gpu.md"]
    assert card["mentions"] and set(card["mentions"][0]) == {"chunk_id", "doc_id", "source", "page"}
    names = {n["name"] for n in card["neighbours"]}
    assert {"docker save", "镜像"} <= names
    assert all(n["weight"] >= 1 for n in card["neighbours"])


def test_entity_spellings_and_aliases(data: Path) -> None:
    (data / "aliases.toml").write_text('[aliases]\n"Hugging Face" = ["HF"]\n', encoding="utf-8")
    assert invoke("ingest", str(data.parent / "notes"), "--data-dir", str(data), "--json")[0] == 0
    code, out, err = invoke("graph", "entity", "hf", "--data-dir", str(data), "--json")
    assert code == 0, err
    card = json.loads(out)
    assert card["name"] == "Hugging Face" and "HF" in card["aliases"] and card["documents"] == ["ollama.md"]
    # the human card
    code, out, _ = invoke("graph", "entity", "ＯＬＬＡＭＡ", "--data-dir", str(data))
    assert code == 0 and "Ollama" in out and "ollama.md" in out and "appears with" in out


def test_unknown_entity_is_one_line_with_suggestions(data: Path) -> None:
    code, out, err = invoke("graph", "entity", "dock", "--data-dir", str(data))
    assert code == 2 and out == ""
    assert err.startswith("error: no entity 'dock'") and "did you mean" in err and "Traceback" not in err
    settings = Settings(data_dir=data, embedding={"model": "none"})  # type: ignore[arg-type]
    with Engine.open(settings) as engine, pytest.raises(NotFoundError):
        describe_entity(engine, "nothing-like-this")


def test_export_graphml_parses_back(data: Path, tmp_path: Path) -> None:
    out_file = tmp_path / "g.graphml"
    code, out, err = invoke("graph", "export", "-o", str(out_file), "--data-dir", str(data), "--json")
    assert code == 0, err
    summary = json.loads(out)
    root = ET.parse(out_file).getroot()
    assert root.tag == f"{GRAPHML}graphml"
    graph = root.find(f"{GRAPHML}graph")
    assert graph is not None and graph.get("edgedefault") == "undirected"
    nodes = {n.get("id"): n for n in graph.iter(f"{GRAPHML}node")}
    edges = list(graph.iter(f"{GRAPHML}edge"))
    assert len(nodes) == summary["entities"] > 10 and len(edges) == summary["edges"] > 10
    for edge in edges:
        assert edge.get("source") in nodes and edge.get("target") in nodes
        assert float(edge.findtext(f"{GRAPHML}data")) >= 1  # type: ignore[arg-type]
    labels = {n.findtext(f"{GRAPHML}data[@key='label']") for n in nodes.values()}
    assert {"docker commit", "Qdrant", "11434", "镜像"} <= labels

    nx = pytest.importorskip("networkx")
    g = nx.read_graphml(out_file)
    assert g.number_of_nodes() == len(nodes) and g.number_of_edges() == len(edges)
    assert g.nodes["dockercommit"]["kind"] == "command"


def test_export_json_to_stdout(data: Path) -> None:
    code, out, err = invoke(
        "graph", "export", "--format", "json", "--min-weight", "2", "--data-dir", str(data)
    )
    assert code == 0, err
    graph = json.loads(out)
    ids = {n["id"] for n in graph["nodes"]}
    assert graph["edges"] and all(e["weight"] >= 2 for e in graph["edges"])
    assert all(e["source"] in ids and e["target"] in ids for e in graph["edges"])


def test_search_mode_graph(data: Path) -> None:
    code, out, err = invoke(
        "search", "怎么保存镜像 docker commit", "--mode", "graph", "--json", "--data-dir", str(data)
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["mode"] == "graph" and result["hits"]
    top = result["hits"][0]
    assert top["source"] == "docker/gpu.md" and top["scores"]["graph"] > 0 and top["scores"]["sparse"] is None


def test_graph_disabled(data: Path) -> None:
    res = CliRunner().invoke(
        cli, ["graph", "entity", "docker", "--data-dir", str(data)], env={"RAG_GRAPH__ENABLED": "false"}
    )
    assert res.exit_code == 2 and "graph leg is not configured" in res.stderr


def test_eval_compares_sparse_graph_hybrid(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        cli,
        ["eval", str(tiny(tmp_path / "tiny")), "--modes", "sparse,graph,hybrid", "--json"],
        env={"RAG_LLM__BACKEND": "none", "RAG_RETRIEVAL__WEIGHT_GRAPH": "0.1"},
    )
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    assert list(result["modes"]) == ["sparse", "graph", "hybrid"]
    assert result["config"]["legs"] == ["sparse", "graph"]
    assert set(result["timings"]["sync_s"]) == {"sparse", "graph"}
    assert 0 <= result["modes"]["graph"]["ndcg@10"] <= 1
