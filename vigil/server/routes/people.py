"""Watchlist people: list, detail, create, edit, delete; photos: add (checked by the pipeline's face stages first),
remove, read (audited). Every change goes through vigil/store/watchlist.py and the running pipeline reloads it."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import UploadFile

from vigil.server.auth import ApiError, Principal, context_of, require
from vigil.server.roles import Permission
from vigil.server.uploads import UploadError, check_filename, decode_photo
from vigil.server.views import person_json
from vigil.store.audit import Outcome
from vigil.store.retention import remove_snapshot
from vigil.store.watchlist import PHOTO_SUFFIXES, WatchlistEditor, photo_id
from vigil.types import ListKind
from vigil.watchlist import PERSON_ID_PATTERN, PERSON_NAME_PATTERN, PersonEntry

router = APIRouter(tags=["watchlist"])
PersonId = Annotated[str, PathParam(pattern=PERSON_ID_PATTERN, max_length=64)]
PhotoId = Annotated[str, PathParam(pattern=r"^[0-9a-f]{16}$")]
MULTIPART_OVERHEAD_BYTES = 64 * 1024


class NewPerson(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=PERSON_ID_PATTERN, max_length=64)
    name: str = Field(min_length=1, max_length=200, pattern=PERSON_NAME_PATTERN)
    list: ListKind = ListKind.DENY
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    notes: str | None = Field(default=None, max_length=2000)


class PersonChanges(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=200, pattern=PERSON_NAME_PATTERN)
    list: ListKind | None = None
    threshold: float | None = Field(default=None, ge=0.0, le=1.0, description="null clears it")
    notes: str | None = Field(default=None, max_length=2000)


def _editor(request: Request) -> WatchlistEditor:
    editor = context_of(request).watchlist
    if editor is None:
        raise ApiError(404, "no watchlist is configured")
    return editor


def _show(request: Request, person: PersonEntry, principal: Principal) -> dict:
    ctx = context_of(request)
    return person_json(person, _editor(request).read(), ctx.hub.watchlist, principal)


def _changed(request: Request) -> None:
    context_of(request).hub.reload_requested.set()  # the pipeline thread reloads at its next step


@router.get("/people", summary="watchlist people (photos listed with photos.read)")
def list_people(request: Request, principal: Annotated[Principal, Depends(require(Permission.PEOPLE_READ))]) -> dict:
    watchlist = _editor(request).read()
    state = context_of(request).hub.watchlist
    return {
        "items": [person_json(p, watchlist, state, principal) for p in watchlist.people],
        "reload_error": state.error or None,
    }


@router.get("/people/{person_id}", summary="one person with each photo's enrolment result")
def get_person(
    person_id: PersonId, request: Request, principal: Annotated[Principal, Depends(require(Permission.PEOPLE_READ))]
) -> dict:
    return _show(request, _editor(request).person(person_id), principal)


@router.post("/people", status_code=201, summary="add a person (then add photos)")
def create_person(
    body: NewPerson, request: Request, principal: Annotated[Principal, Depends(require(Permission.WATCHLIST_ENROLL))]
) -> dict:
    person = _editor(request).create(PersonEntry(**body.model_dump()))
    context_of(request).audit.record(principal.actor, "person.create", f"person:{person.id}")
    _changed(request)
    return _show(request, person, principal)


@router.patch("/people/{person_id}", summary="change name, list, threshold or notes")
def update_person(
    person_id: PersonId,
    body: PersonChanges,
    request: Request,
    principal: Annotated[Principal, Depends(require(Permission.WATCHLIST_EDIT))],
) -> dict:
    changes = body.model_dump(include=body.model_fields_set)
    person = _editor(request).update(person_id, changes)
    context_of(request).audit.record(
        principal.actor,
        "person.update",
        f"person:{person_id}",
        detail=f"changed {', '.join(sorted(changes)) or 'nothing'}",
    )
    _changed(request)
    return _show(request, person, principal)


@router.delete("/people/{person_id}", summary="delete a person, their photos, embeddings and event snapshots")
def delete_person(
    person_id: PersonId, request: Request, principal: Annotated[Principal, Depends(require(Permission.WATCHLIST_EDIT))]
) -> dict:
    ctx = context_of(request)
    deleted = _editor(request).delete(person_id)
    snapshots = ctx.events.anonymise_person(person_id)
    root = (ctx.data_dir / "snapshots").resolve()
    removed_snapshots = sum(remove_snapshot(path, root) for path in snapshots)
    detail = (
        f"{len(deleted.removed)} photo file(s) deleted, {len(deleted.kept)} outside the watchlist folder kept; "
        f"{len(snapshots)} event(s) anonymised, {removed_snapshots} snapshot(s) deleted"
    )
    ctx.audit.record(principal.actor, "person.delete", f"person:{person_id}", detail=detail)
    _changed(request)
    return {"id": person_id, "deleted": True, "detail": detail}


@router.get("/people/{person_id}/photos/{photo}", summary="an enrolled photo (audited)", response_class=FileResponse)
def get_photo(
    person_id: PersonId,
    photo: PhotoId,
    request: Request,
    principal: Annotated[Principal, Depends(require(Permission.PHOTOS_READ))],
) -> FileResponse:
    path = _editor(request).photo_file(person_id, photo)
    media_type = PHOTO_SUFFIXES.get(path.suffix.lower())
    if media_type is None or not path.is_file():
        raise ApiError(404, f"photo {photo} of {person_id} is not an image file vigil serves")
    context_of(request).audit.record(principal.actor, "photo.read", f"person:{person_id}/photo:{photo}")
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "private, no-store"})


@router.delete("/people/{person_id}/photos/{photo}", summary="remove a photo (and its file when vigil stored it)")
def remove_photo(
    person_id: PersonId,
    photo: PhotoId,
    request: Request,
    principal: Annotated[Principal, Depends(require(Permission.WATCHLIST_EDIT))],
) -> dict:
    path, deleted = _editor(request).remove_photo(person_id, photo)
    context_of(request).audit.record(
        principal.actor,
        "photo.remove",
        f"person:{person_id}/photo:{photo}",
        detail="file deleted" if deleted else "file kept (outside the watchlist folder)",
    )
    _changed(request)
    return {"id": photo, "removed": True, "file_deleted": deleted}


UPLOAD_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            }
        },
    }
}


@router.post(
    "/people/{person_id}/photos",
    status_code=201,
    openapi_extra=UPLOAD_SCHEMA,
    summary="add a photo (multipart field 'file'): checked for exactly one usable face before it is stored",
)
async def add_photo(
    person_id: PersonId,
    request: Request,
    principal: Annotated[Principal, Depends(require(Permission.WATCHLIST_ENROLL))],
) -> JSONResponse:
    ctx = context_of(request)
    action, target = "photo.add", f"person:{person_id}"
    editor = _editor(request)
    await run_in_threadpool(editor.person, person_id)  # 404 before reading a byte of the body
    try:
        data, filename = await _read_upload(request, ctx.server.max_upload_bytes)
        check_filename(filename)
        suffix, image = await run_in_threadpool(
            decode_photo, data, ctx.server.max_upload_bytes, ctx.server.max_image_pixels
        )
    except UploadError as exc:
        raise ApiError(exc.status, exc.message, action, target) from None
    verdict = await _check_faces(request, image, target)
    if not verdict.ok:
        raise ApiError(422, f"photo refused: {verdict.reason}", action, target, extra=verdict.to_json())
    relative = await run_in_threadpool(editor.add_photo, person_id, data, suffix)
    person = await run_in_threadpool(editor.person, person_id)
    ctx.audit.record(principal.actor, action, target, detail=f"stored {relative}")
    _changed(request)
    key = photo_id(relative)
    photo = {"id": key, "url": f"/api/v1/people/{person_id}/photos/{key}"}
    return JSONResponse(
        {**verdict.to_json(), "photo": photo, "person": _show(request, person, principal)}, status_code=201
    )


async def _read_upload(request: Request, max_bytes: int) -> tuple[bytes, str | None]:
    length = request.headers.get("content-length")
    if length is None or not length.isdigit():
        raise UploadError(411, "send the upload with a Content-Length header")
    if int(length) > max_bytes + MULTIPART_OVERHEAD_BYTES:
        raise UploadError(413, f"upload is {length} bytes, over the limit of {max_bytes}")
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise UploadError(415, "send the photo as multipart/form-data with the field 'file'")
    try:
        form = await request.form(max_files=1, max_fields=4)
    except Exception as exc:  # a malformed multipart body
        raise UploadError(422, f"unreadable multipart body ({type(exc).__name__})") from None
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise UploadError(422, "multipart field 'file' is required and must be a file")
    try:
        return await upload.read(max_bytes + 1), upload.filename
    finally:
        await upload.close()
        await form.close()


async def _check_faces(request: Request, image, target: str):
    ctx = context_of(request)
    future = ctx.hub.photo_checks.submit(image)
    if future is None:
        raise ApiError(
            503,
            "enrolment is busy: retry in a few seconds",
            "photo.add",
            target,
            Outcome.FAILED,
            headers={"Retry-After": "5"},
        )
    try:
        return await asyncio.wait_for(asyncio.wrap_future(future), ctx.photo_check_timeout_s)
    except TimeoutError:
        future.cancel()
        raise ApiError(
            503,
            f"the pipeline did not check the photo within {ctx.photo_check_timeout_s:.0f} s: retry",
            "photo.add",
            target,
            Outcome.FAILED,
        ) from None
