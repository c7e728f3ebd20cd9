"""Documents and jobs: list (with each file's status), upload or ingest by path (in the
background), delete, poll a job."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, File, Query, Request, UploadFile
from fastapi.responses import JSONResponse
from starlette.responses import Response

from api.auth import is_loopback, require_read, require_write
from api.errors import ApiError
from api.schemas import DeleteResponse, DocumentList, IngestRequest, JobInfo, JobList, UploadResponse
from api.service import EngineDep, ServiceDep
from api.uploads import place_upload, safe_filename, stage_upload
from ingest.jobs import Job
from rag.errors import ConflictError, InputError, NotFoundError, RagError
from rag.filestatus import document_rows

router = APIRouter(tags=["documents"])

#: How long DELETE waits for its job before answering 202 with the job to poll.
DELETE_WAIT_S = 30.0


@router.get(
    "/v1/documents",
    summary="List indexed documents",
    response_model=DocumentList,
    dependencies=[Depends(require_read)],
)
def list_documents(
    engine: EngineDep,
    service: ServiceDep,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> Response:
    """Every file, sorted by source: indexed documents as searches see them now (paths, pages,
    chunk counts, ingest times, the notes ingest kept: repairs, redactions), files waiting to be
    ingested (`pending`) and files that failed, with the reason (`failed`, `error`)."""
    with engine.reading():
        docs = engine.store.documents()
    rows = document_rows(docs, service.jobs().status.snapshot(), service.settings.data_dir)
    return JSONResponse({"total": len(rows), "documents": rows[offset : offset + limit]})


@router.post(
    "/v1/ingest",
    summary="Ingest files and folders of the server's machine",
    status_code=202,
    response_model=JobInfo,
    dependencies=[Depends(require_write)],
)
def ingest_paths(body: IngestRequest, request: Request, service: ServiceDep) -> Response:
    """What `rag ingest PATH...` sends to the server that owns its data dir: the paths are read
    by the server, so only a client on the server's own machine may send them (403 otherwise).
    Poll `GET /v1/jobs/{id}`; its `result` is the `rag ingest --json` object."""
    client = request.client.host if request.client else ""
    if not is_loopback(client):
        raise ApiError(
            403,
            "ingest by path is only accepted from the server's own machine",
            hint="upload the files with POST /v1/documents instead",
        )
    paths = [Path(p) for p in body.paths]
    for p in paths:
        if not p.is_absolute():
            raise InputError(f"path is not absolute: {p}", hint="send absolute paths")
        if not p.exists():
            raise InputError(f"path not found: {p}", hint="check the path; nothing was ingested")
    settings = service.settings.model_copy(deep=True)
    if body.include:
        settings.ingest.include = list(body.include)
    if body.exclude:
        settings.ingest.exclude = [*settings.ingest.exclude, *body.exclude]
    if body.no_redact:
        settings.ingest.redact_secrets = False
    job = service.jobs().submit_ingest(paths, [str(p) for p in paths], settings)
    return JSONResponse(job.as_dict(), status_code=202, headers={"Location": f"/v1/jobs/{job.id}"})


@router.post(
    "/v1/documents",
    summary="Upload files to ingest",
    status_code=202,
    response_model=UploadResponse,
    dependencies=[Depends(require_write)],
)
def upload_documents(
    files: Annotated[
        list[UploadFile],
        File(description="One or more files (.md .markdown .txt .pdf), e.g. `curl -F files=@notes.md`."),
    ],
    service: ServiceDep,
) -> Response:
    """Saves the files under `<data_dir>/uploads/` (the name sanitised: no folders, no hidden files)
    and ingests them in the background. Uploading a name again replaces that document. The whole
    request may be at most RAG_API__MAX_UPLOAD_MB (413 beyond). Poll `GET /v1/jobs/{id}` until
    `done`; the documents are searchable from then on."""
    jobs = service.jobs()
    names = [safe_filename(f.filename or "") for f in files]
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise InputError(f"two files in this request are both named {name!r}")
        seen.add(name)
    max_mb = service.settings.api.max_upload_mb
    budget = int(max_mb * 2**20)
    staged: list[tuple[Path, int]] = []
    try:
        for f in files:
            tmp, size = stage_upload(f.file, service.uploads, limit=budget, max_mb=max_mb)
            staged.append((tmp, size))
            budget -= size
        paths = [
            place_upload(tmp, service.uploads, name) for (tmp, _), name in zip(staged, names, strict=True)
        ]
    except BaseException:
        for tmp, _ in staged:
            with contextlib.suppress(OSError):
                tmp.unlink()
        raise
    job = jobs.submit_ingest(paths, names)
    body = {
        "job": job.as_dict(),
        "files": [{"name": n, "bytes": size} for n, (_, size) in zip(names, staged, strict=True)],
    }
    return JSONResponse(body, status_code=202, headers={"Location": f"/v1/jobs/{job.id}"})


@router.delete(
    "/v1/documents/{doc_id}",
    summary="Delete a document from every index",
    response_model=DeleteResponse,
    responses={202: {"model": JobInfo, "description": "Still running after 30 s: poll the job."}},
    dependencies=[Depends(require_write)],
)
def delete_document(doc_id: str, engine: EngineDep, service: ServiceDep) -> Response:
    """Removes the document from the chunk store and every index (searches stop finding it when
    this returns); an uploaded file is deleted too. 404 if unknown, 409 while an upload of the
    same file is still being ingested."""
    with engine.reading():
        record = engine.store.document(doc_id)
    if record is None:
        raise NotFoundError(f"no document with id {doc_id}", hint="GET /v1/documents lists them")
    jobs = service.jobs()
    pending = jobs.pending_job_for(record.path)
    if pending is not None:
        raise ConflictError(
            f"{record.source} is being ingested (job {pending.id})",
            hint=f"wait until GET /v1/jobs/{pending.id} says done, then delete",
        )
    job = jobs.submit_delete(doc_id, record.source)
    if not job.done.wait(DELETE_WAIT_S):
        return JSONResponse(job.as_dict(), status_code=202, headers={"Location": f"/v1/jobs/{job.id}"})
    _raise_failed(job)
    assert job.result is not None
    keys = ("deleted", "doc_id", "source", "chunks", "removed_file")
    return JSONResponse({**{k: job.result[k] for k in keys}, "job": job.id})


def _raise_failed(job: Job) -> None:
    if job.status == "failed":
        if job.exception is not None:
            raise job.exception
        raise RagError((job.error or {}).get("message", "the job failed"))


@router.get(
    "/v1/jobs/{job_id}",
    summary="Poll a background job",
    response_model=JobInfo,
    tags=["jobs"],
    dependencies=[Depends(require_read)],
)
def get_job(job_id: str, service: ServiceDep) -> Response:
    job = service.jobs().get(job_id)
    if job is None:
        raise NotFoundError(f"no job {job_id}", hint="job ids come from POST /v1/documents")
    return JSONResponse(job.as_dict())


@router.post(
    "/v1/jobs/{job_id}/cancel",
    summary="Cancel a background job",
    response_model=JobInfo,
    tags=["jobs"],
    dependencies=[Depends(require_write)],
)
def cancel_job(job_id: str, service: ServiceDep) -> Response:
    """A queued job never runs; a running ingest, folder sync or catch-up stops after its current
    file, or while the dense leg embeds, after its current batch (a few seconds on a small CPU).
    What it committed stays searchable (chunk store, BMX, graph) and the dense leg resumes on the
    next ingest. Answers the job as it is now: poll it until its `status` is no longer `running`;
    it then ends `failed` with `error.type` `cancelled` (a job that had finished stays as it was)."""
    job = service.jobs().cancel_job(job_id)
    if job is None:
        raise NotFoundError(f"no job {job_id}", hint="GET /v1/jobs lists the recent ones")
    return JSONResponse(job.as_dict())


@router.get(
    "/v1/jobs",
    summary="Recent background jobs, newest first",
    response_model=JobList,
    tags=["jobs"],
    dependencies=[Depends(require_read)],
)
def list_jobs(service: ServiceDep, limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> Response:
    return JSONResponse({"jobs": [j.as_dict() for j in service.jobs().recent(limit)]})
