"""End to end: a folder of notes with credentials in every shape goes through ingest and all three legs
(BMX, dense vectors in the embedded Qdrant, the entity graph); no byte of any planted secret is left
anywhere under the data dir, while what people search for (a container id, a commit SHA, a port, a URL)
is still found by search.

Every value is made up; provider prefixes are assembled at run time so this file does not look like a
leak. The data dir is fresh, so free pages of an earlier run cannot hide or leak anything.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.pipeline import sync_paths
from rag.engine import Engine
from rag.retrieval.search import Mode
from rag.settings import load_settings
from tests.factories_pdf import code, heading, make_pdf, para
from tests.hashing_embedder import HashingEmbedder

SK = "sk" + "-"
HF = "hf" + "_"

# shape -> made-up value; each one must vanish from the data dir
SECRETS = {
    "minio_access": "Q7XM2KLP9RTV4NZB6WCY",
    "minio_secret": "zuf+tfteSlswRu7BJ86wekitnifILbZam1KYY3TG",
    "zh_login": "Abc#2023@pro",
    "zh_product": "Hb7kQ2xLm9Vp4Zr8",
    "section_1": "R00t!Lab2024",
    "section_2": "Dev@91xq",
    "ssh_1": "K8m#pQ2zLx9w",
    "ssh_2": "x6vmSqS3TYLr",
    "ssh_3": "9y!wiGrt^^B2",
    "short": "850613",
    "user_next": "Xk29#mmqT",
    "docker_env": "My5qlR00t!pw",
    "openai": SK + "proj-" + "Zq81LmN4pX0vT7rW2yB5cK9dF3gH6jA1eQ7uY4iO",
    "hf": HF + "kQ8xZ2mP7vL3nR9tW4bC6yH1dF5sJ0gAeUq",
    "mysql_next": "Admin888!pro",
    "table_pw": "Tb#55wq0Lk",
    "docker_login": "dckr9Kq2Lm7Vp",
    "en_space": "Wifi#Floor3x",
    "pdf_login": "Pdf!Login2024",
    "pdf_secret": "nf1r9D9QUpa/lmI5b1rarFSt23cTUQSynsuv2h3p",
    "pdf_ssh": "Jq4#Zt8wLm2v",
}
S = SECRETS

CONTAINER = "7aa4b3c2d1e0"
SHA = "3f9a8c2b7d1e4f6a9b0c5d2e8f1a7b3c4d5e6f70"
PORT = "30889"
URL = "http://10.8.0.12:11434/api/tags"

ZH_NOTE = f"""# 实验室服务器

## MinIO

控制台地址 {URL}

Access Key  {S["minio_access"]}
Secret Key  {S["minio_secret"]}

## 登录

登录密码 {S["zh_login"]}

Harbor 密码 {S["zh_product"]}

测试库 password {S["short"]}，不要外传

## 账号密码

root  {S["section_1"]}
dev / {S["section_2"]}

## 跳板机

ssh -p {PORT} root@10.8.0.12

{S["ssh_1"]}

ssh -p 30890 root@10.8.0.13

{S["ssh_2"]}

ssh -p 30891 root@10.8.0.14

{S["ssh_3"]}

用户名：deploy
{S["user_next"]}

## 容器

重启容器：docker start {CONTAINER}，然后 docker exec -it {CONTAINER} bash。

修复分词的提交是 {SHA}。
"""

EN_NOTE = f"""# Deploy notes

```bash
docker run -d -e MYSQL_ROOT_PASSWORD={S["docker_env"]} -p 3306:3306 mysql:8
export OPENAI_API_KEY={S["openai"]}
huggingface-cli login --token {S["hf"]}
docker login -u admin -p {S["docker_login"]} registry.example.cn
```

mysql -h 10.0.0.8 -u root -p
{S["mysql_next"]}

| host | user | password |
|---|---|---|
| 10.0.0.9 | ops | {S["table_pw"]} |

The wifi password {S["en_space"]} works on floor 3. Ollama listens on port 11434.
"""


def _pdf() -> bytes:
    return make_pdf(
        [
            [
                heading("GPU 机器"),
                para(f"登录密码 {S['pdf_login']}"),
                code(f"Secret Key  {S['pdf_secret']}"),
                code(f"ssh -p 30892 root@10.8.0.15\n{S['pdf_ssh']}"),
                para("显卡驱动 535.104.05，CUDA 12.2。"),
            ]
        ]
    )


def _all_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _leaks(files: dict[str, bytes]) -> list[str]:
    return [
        f"{shape} in {name}"
        for shape, value in SECRETS.items()
        for name, data in files.items()
        if value.encode("utf-8") in data
    ]


@pytest.fixture
def notes(tmp_path: Path) -> Path:
    root = tmp_path / "notes"
    root.mkdir()
    (root / "服务器.md").write_text(ZH_NOTE, encoding="utf-8")
    (root / "deploy.md").write_text(EN_NOTE, encoding="utf-8")
    (root / "gpu.pdf").write_bytes(_pdf())
    return root


def _ingest(notes: Path, data_dir: Path, *, redact: bool) -> tuple[dict[str, bytes], dict[str, list[str]]]:
    """Ingest ``notes`` into a fresh ``data_dir`` with all legs; (bytes of every file while the engine is
    open, then after it closed, merged by name) and the texts of the hits for a few searches."""
    settings = load_settings(data_dir=data_dir)
    settings.embedding.model = "hashing"
    settings.ingest.redact_secrets = redact
    with Engine.open(settings, create=True, embedder=HashingEmbedder(256)) as engine:
        report = sync_paths([notes], settings, engine.store).as_dict()
        assert report["failed"] == [] and report["added"] == 3
        assert (sum(report["redactions"].values()) >= len(SECRETS)) == redact
        engine.sync()
        assert set(engine.available_legs()) >= {"sparse", "dense", "graph"}
        files = _all_bytes(data_dir)  # with the SQLite WAL and shm files still there
        searches: list[tuple[str, Mode]] = [(q, "sparse") for q in (CONTAINER, SHA, PORT, URL)]
        searches += [
            (q, "hybrid") for q in ("password 密码 Secret Key", "ssh root 登录", "docker login mysql")
        ]
        hits = {
            query: [h.chunk.text for h in engine.search(query, k=20, mode=mode)] for query, mode in searches
        }
    for name, data in _all_bytes(data_dir).items():  # after close: checkpointed databases, final files
        files[name + " (closed)"] = data
    return files, hits


def test_no_planted_secret_reaches_any_file_and_searchable_strings_survive(
    notes: Path, tmp_path: Path
) -> None:
    files, hits = _ingest(notes, tmp_path / "data", redact=True)
    names = set(files)
    assert "chunks.sqlite3" in names and any(n.endswith("-wal") for n in names)
    assert all(any(n.startswith(d) for n in names) for d in ("sparse/", "dense/", "graph/"))
    assert _leaks(files) == []
    for needle in (CONTAINER, SHA, PORT, URL):  # searchable, and the hit shows it whole
        assert any(needle in t for t in hits[needle]), needle
    served = [t for texts in hits.values() for t in texts]
    assert any("[REDACTED:" in t for t in served)
    assert not [v for v in SECRETS.values() if any(v in t for t in served)]
    raw = b"".join(files.values())
    for keep in (CONTAINER, SHA, PORT, URL, "Access Key", "登录密码", "ssh -p 30890 root@10.8.0.13"):
        assert keep.encode() in raw, keep


def test_without_redaction_every_planted_secret_is_stored(notes: Path, tmp_path: Path) -> None:
    """The control: each planted value does reach the stores when nothing redacts it (text extraction
    keeps it, the leak check sees it), so the test above is not passing by accident."""
    files, _ = _ingest(notes, tmp_path / "data", redact=False)
    leaked = {entry.split(" in ")[0] for entry in _leaks(files)}
    assert leaked == set(SECRETS)
