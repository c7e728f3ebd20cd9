"""A delete whose publish failed leaves the document visible; deleting it again completes it
(instead of the 404 that said the document was gone while searches still found it)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from rag.errors import StoreError
from rag.serving import ServingEngine
from tests.test_api_common import api_settings


def test_a_second_delete_completes_one_whose_publish_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = api_settings(tmp_path)
    settings.api.publish_interval_s = 3600  # no idle publish heals it behind the test's back
    with TestClient(create_app(settings)) as client:
        docs = client.get("/v1/documents").json()["documents"]
        victim = docs[0]
        real = ServingEngine.publish
        broken = {"on": True}

        def failing(self: ServingEngine, **kw: object) -> object:
            if broken["on"]:  # every publish fails, the idle writer's retries too
                raise StoreError("vector store is unusable: simulated")
            return real(self, **kw)  # type: ignore[arg-type]

        monkeypatch.setattr(ServingEngine, "publish", failing)
        first = client.delete(f"/v1/documents/{victim['doc_id']}")
        assert first.status_code == 503
        listed = {d["doc_id"] for d in client.get("/v1/documents").json()["documents"]}
        broken["on"] = False
        second = client.delete(f"/v1/documents/{victim['doc_id']}")
        assert second.status_code == 200, second.json()
        assert second.json()["deleted"] is True and second.json()["source"] == victim["source"]
        after = {d["doc_id"] for d in client.get("/v1/documents").json()["documents"]}
        assert victim["doc_id"] not in after
        assert client.delete(f"/v1/documents/{victim['doc_id']}").status_code == 404
        assert victim["doc_id"] in listed  # searches still saw it after the failed publish


def test_ingest_by_path_only_from_the_servers_machine(tmp_path: Path) -> None:
    settings = api_settings(tmp_path)
    with TestClient(create_app(settings)) as client:  # its client address is "testclient"
        res = client.post("/v1/ingest", json={"paths": [str(tmp_path)]})
        assert res.status_code == 403
        assert res.json()["error"]["hint"] == "upload the files with POST /v1/documents instead"
