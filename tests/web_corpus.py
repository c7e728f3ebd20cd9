"""Helpers for the web page tests (no tests here): notes with a PDF, indexed, served live."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rag.settings import Settings
from tests.answer_corpus import NOTES, index_notes
from tests.factories_pdf import heading, make_pdf, para

PDF_NAME = "manuals/backup.pdf"
#: The sentence of page 2 that questions about backups find (and that must be highlighted).
PDF_SENTENCE = "The rsync backup job runs every night at 02:30 and keeps fourteen snapshots."
PDF_QUESTION = "When does the rsync backup job run and how many snapshots does it keep?"


def backup_pdf() -> bytes:
    return make_pdf(
        [
            [heading("Backup manual"), para("This manual describes the home server and its disks.")],
            [
                heading("Nightly backups", 2),
                para("Backups are written to the external disk mounted at /mnt/backup. " + PDF_SENTENCE),
                para("Restores are started by hand with the restore script in the admin folder."),
            ],
        ]
    )


def web_settings(tmp_path: Path, llm_url: str = "http://127.0.0.1:9", **api: Any) -> Settings:
    """The answer-test notes plus a two-page PDF, indexed sparse-only under ``tmp_path``."""
    root = tmp_path / "notes"
    (root / "manuals").mkdir(parents=True)
    (root / PDF_NAME).write_bytes(backup_pdf())
    settings = index_notes(tmp_path, dict(NOTES))
    settings.llm.url = llm_url
    settings.llm.model = "stub-model"
    settings.llm.retries = 0
    settings.ingest.workers = 1
    settings.api.publish_interval_s = 0.05
    for key, value in api.items():
        setattr(settings.api, key, value)
    return settings
