"""Cameras: live status (everyone with cameras.read) and the latest frame with face boxes (live.view, audited)."""

from __future__ import annotations

import threading
import time
from typing import Annotated

import cv2
import numpy as np
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi import Path as PathParam

from vigil.config import CAMERA_NAME_PATTERN
from vigil.live import CameraStatus, LiveFrame
from vigil.server.auth import ApiError, Principal, context_of, require
from vigil.server.roles import Permission

router = APIRouter(tags=["cameras"])
CameraName = Annotated[str, PathParam(pattern=CAMERA_NAME_PATTERN, max_length=100)]
FRAME_REUSE_S = 0.5  # an encoded frame is served again for this long: pollers cost at most 2 encodes/s per camera
JPEG_QUALITY = 80
COLOUR_FACE, COLOUR_MATCH = (200, 200, 200), (0, 0, 255)


class FrameCache:
    """The last JPEG per (camera, boxes, width), reused for ``FRAME_REUSE_S`` or until a newer frame is asked for."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, bool, int], tuple[float, int, bytes]] = {}

    def get(self, frame: LiveFrame, boxes: bool, width: int) -> bytes:
        key, now = (frame.camera, boxes, width), time.monotonic()
        with self._lock:
            cached = self._entries.get(key)
        if cached is not None and (cached[1] == frame.index or now - cached[0] < FRAME_REUSE_S):
            return cached[2]
        data = render_frame(frame, boxes, width)
        with self._lock:
            self._entries[key] = (now, frame.index, data)
        return data


def render_frame(frame: LiveFrame, boxes: bool, width: int) -> bytes:
    """JPEG of the frame, faces boxed (red and named on a watchlist match), scaled down to ``width`` if smaller."""
    image = frame.image
    scale = min(1.0, width / image.shape[1]) if width else 1.0
    if scale < 1.0:
        image = cv2.resize(
            image, (int(image.shape[1] * scale), int(image.shape[0] * scale)), interpolation=cv2.INTER_AREA
        )
    elif boxes and frame.faces:
        image = image.copy()  # never draw on the pipeline's frame
    if boxes:
        for face in frame.faces:
            x1, y1, x2, y2 = (int(v * scale) for v in face.box)
            colour = COLOUR_MATCH if face.person_id else COLOUR_FACE
            cv2.rectangle(image, (x1, y1), (x2, y2), colour, 1 if face.predicted else 2)  # thin: not detected here
            if face.person_name:
                cv2.putText(image, face.person_name, (x1, max(y1 - 6, 12)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1)
    ok, encoded = cv2.imencode(".jpg", np.ascontiguousarray(image), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ApiError(500, "cannot encode the frame as JPEG")
    return encoded.tobytes()


def _statuses(request: Request) -> list[CameraStatus]:
    ctx = context_of(request)
    known = {status.name: status for status in ctx.hub.statuses()}
    names = [camera["name"] for camera in ctx.info.cameras] + [
        n for n in known if n not in {c["name"] for c in ctx.info.cameras}
    ]
    return [known.get(name) or CameraStatus(name=name, up=False) for name in names]


def _camera_json(status: CameraStatus, request: Request, principal: Principal) -> dict:
    out = status.to_json()
    frame = context_of(request).hub.latest_frame(status.name)
    live = principal.can(Permission.LIVE_VIEW)
    out["frame_url"] = f"/api/v1/cameras/{status.name}/frame.jpg" if live and frame is not None else None
    out["latest_frame"] = frame.to_json() if live and frame is not None else None
    return out


@router.get("/cameras", summary="every camera: up/down, fps, drops, reconnects, last error (credentials masked)")
def list_cameras(request: Request, principal: Annotated[Principal, Depends(require(Permission.CAMERAS_READ))]) -> dict:
    return {"items": [_camera_json(status, request, principal) for status in _statuses(request)]}


@router.get("/cameras/{name}", summary="one camera; with live.view also its latest frame's faces")
def get_camera(
    name: CameraName, request: Request, principal: Annotated[Principal, Depends(require(Permission.CAMERAS_READ))]
) -> dict:
    for status in _statuses(request):
        if status.name == name:
            return _camera_json(status, request, principal)
    raise ApiError(404, f"camera {name!r} is not configured")


@router.get(
    "/cameras/{name}/frame.jpg",
    summary="the camera's latest frame as JPEG, faces boxed and named",
    response_class=Response,
)
def latest_frame(
    name: CameraName,
    request: Request,
    principal: Annotated[Principal, Depends(require(Permission.LIVE_VIEW))],
    boxes: bool = True,
    width: Annotated[int, Query(ge=0, le=7680, description="scale down to this width (0: as is)")] = 0,
) -> Response:
    ctx = context_of(request)
    frame = ctx.hub.latest_frame(name)
    if frame is None:
        raise ApiError(404, f"camera {name!r} has no frame yet (not configured, or not connected)")
    if ctx.live_view_due(principal.name, name):
        ctx.audit.record(principal.actor, "live.view", f"camera:{name}")
    cache: FrameCache = request.app.state.frame_cache
    return Response(
        cache.get(frame, boxes, width),
        media_type="image/jpeg",
        headers={
            "Cache-Control": "private, no-store",
            "X-Vigil-Frame-Index": str(frame.index),
            "X-Vigil-Frame-Ts": frame.ts,
        },
    )
