"""`vigil bench detect`: detector throughput (frames/s) at input sizes 320, 480 and 640.

    vigil bench detect --json OUT [--model PATH] [--device auto|cpu|cuda] [--seconds 10]

What is timed, per device (``auto``: CPU, plus CUDA when torch sees a GPU):

* ``ultralytics-torch``: :meth:`vigil.detect.FaceDetector.detect` with the ``.pt`` model (the runtime's own call:
  letterbox, forward pass, NMS, results back to frame pixels), batch 1, and batch 16 on CUDA (FP16 on CUDA).
* When an ``.onnx`` file lies beside the ``.pt`` (same stem), or is the model: ``ultralytics-onnx``, the same call
  with the ONNX export (Ultralytics runs it with onnxruntime), or ``yolov5-face-onnx`` for a YOLOv5-face file
  (:mod:`vigil.yolov5_face`: letterbox, forward pass, decoding, NMS), and ``onnxruntime``, the bare
  ``InferenceSession.run`` of the network on a ready square S x S float tensor (no pre/post-processing; the
  Ultralytics rows letterbox the 16:9 frame to a smaller S x (S * 9/16, rounded up to 32) input when the model's
  shape allows), with the CUDA provider on CUDA. A static-shape export
  is timed only at its own size and batch.

The input is frame 100 of the shared Hamilton clip (640x360; a seeded synthetic frame when the clip is absent),
repeated to fill a batch. After a warm-up, each measurement runs for about ``--seconds`` seconds (at least 3 calls);
frames/s = batch x calls / elapsed, with the median and 90th percentile latency per call and, because a shared
machine slows some calls, ``frames_per_s_best_call`` = batch / the fastest call. CPU runs use torch's and
onnxruntime's default thread counts. The JSON holds the numbers, the faces found on the frame at the default
confidence threshold (a sanity check), the model (path, sha256) and the host.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

import numpy as np

from vigil.bench.report import save_report
from vigil.errors import ModelError, VigilError

IMAGE_SIZES = (320, 480, 640)
CUDA_BATCH = 16
WARMUP_CALLS = {"cpu": 2, "cuda": 10}
MIN_CALLS = 3
FRAME_INDEX = 100
log = logging.getLogger("vigil.bench.detect")


def _model(path: Path | None) -> tuple[Path, str]:
    """(model path, sha256): the manifest's default detector, or ``path`` (verified when the manifest lists it)."""
    from vigil.models import ModelRegistry, sha256_of

    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"{path}: detector model file not found")
        return path, sha256_of(path)
    spec = ModelRegistry().resolve("detector", None)
    return spec.path, spec.sha256 or sha256_of(spec.path)


def bench_frame() -> tuple[np.ndarray, str]:
    """(BGR frame, where it came from): frame 100 of the Hamilton clip, else a seeded synthetic 640x360 frame."""
    import cv2

    from vigil.paths import data_path

    clip = data_path("video", "short_hamilton_clip.mp4")
    if clip.is_file():
        capture = cv2.VideoCapture(str(clip))
        try:
            capture.set(cv2.CAP_PROP_POS_FRAMES, FRAME_INDEX)
            ok, frame = capture.read()
        finally:
            capture.release()
        if ok and frame is not None:
            return frame, f"{clip} frame {FRAME_INDEX}"
    frame = np.random.default_rng(0).integers(0, 256, (360, 640, 3), dtype=np.uint8)
    return frame, "synthetic 640x360 noise (Hamilton clip not found)"


def _devices(device: str) -> list[str]:
    import torch

    if device not in ("auto", "cpu", "cuda"):
        raise VigilError(f"--device: expected auto, cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise VigilError("--device cuda: torch sees no CUDA GPU")
    if device == "auto":
        return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    return [device]


def _time_calls(call, seconds: float, warmup: int, sync=None) -> list[float]:
    for _ in range(warmup):
        call()
    latencies: list[float] = []
    started = time.monotonic()
    while len(latencies) < MIN_CALLS or time.monotonic() - started < seconds:
        t0 = time.monotonic()
        call()
        if sync is not None:
            sync()
        latencies.append(time.monotonic() - t0)
    return latencies


def _row(runtime: str, device: str, imgsz: int, batch: int, latencies: list[float], **extra) -> dict:
    elapsed = sum(latencies)
    row = {
        "runtime": runtime,
        "device": device,
        "imgsz": imgsz,
        "batch": batch,
        "calls": len(latencies),
        "frames_per_s": round(batch * len(latencies) / elapsed, 2),
        "latency_ms_median": round(1000 * float(np.median(latencies)), 2),
        "latency_ms_p90": round(1000 * float(np.percentile(latencies, 90)), 2),
        # batch / fastest call: less sensitive to other processes on a shared machine than the mean
        "frames_per_s_best_call": round(batch / min(latencies), 2),
        **extra,
    }
    print(
        f"{runtime:18s} {device:4s} imgsz {imgsz:4d} batch {batch:2d}: {row['frames_per_s']:8.1f} frames/s (best "
        f"call {row['frames_per_s_best_call']:.1f}; median {row['latency_ms_median']:.1f} ms per call, "
        f"{row['calls']} calls)",
        flush=True,
    )
    return row


def bench_detector(
    path: Path, runtime: str, device: str, frame: np.ndarray, seconds: float, sizes: tuple[int, ...]
) -> list[dict]:
    """Time FaceDetector.detect (torch .pt or Ultralytics' ONNX route) at each size, batch 1 (+16 on CUDA)."""
    from vigil.config import DetectorConfig
    from vigil.detect import FaceDetector

    conf = DetectorConfig().conf_threshold
    rows = []
    for imgsz in sizes:
        batches = (1, CUDA_BATCH) if device == "cuda" else (1,)
        for batch in batches:
            detector = FaceDetector(path, imgsz=imgsz, conf_threshold=conf, device=device, batch_size=batch, logger=log)
            frames = [frame] * batch
            faces = len(detector.detect([frame])[0])
            sync = _cuda_sync if device == "cuda" else None
            latencies = _time_calls(lambda d=detector, f=frames: d.detect(f), seconds, WARMUP_CALLS[device], sync)
            rows.append(
                _row(
                    runtime,
                    device,
                    imgsz,
                    batch,
                    latencies,
                    faces_on_frame=faces,
                    conf_threshold=conf,
                    half=detector.half,
                )
            )
    return rows


def _cuda_sync() -> None:
    import torch

    torch.cuda.synchronize()


def _onnx_shapes(session) -> tuple[int | None, int | None]:
    """(fixed batch or None, fixed square size or None) of the session's input."""
    shape = session.get_inputs()[0].shape
    batch = shape[0] if isinstance(shape[0], int) else None
    size = shape[2] if isinstance(shape[2], int) and shape[2] == shape[3] else None
    return batch, size


def _ort_session(path: Path, device: str):
    import onnxruntime as ort

    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
    if device == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
        return None
    if device == "cuda" and hasattr(ort, "preload_dlls"):
        try:
            ort.preload_dlls()
        except Exception as exc:  # missing CUDA libraries: the session falls back and is skipped below
            log.debug("preload_dlls: %s", exc)
    try:
        session = ort.InferenceSession(str(path), providers=providers)
    except Exception as exc:
        raise ModelError(f"{path}: onnxruntime cannot load the model ({type(exc).__name__})") from None
    if device == "cuda" and session.get_providers()[0] != "CUDAExecutionProvider":
        return None
    return session


def bench_onnxruntime(path: Path, device: str, seconds: float) -> list[dict]:
    """Bare ``session.run`` of the ONNX network at each supported size and batch."""
    session = _ort_session(path, device)
    if session is None:
        log.warning("%s: CUDAExecutionProvider not usable here, onnxruntime on cuda skipped", path)
        return []
    fixed_batch, fixed_size = _onnx_shapes(session)
    sizes = (fixed_size,) if fixed_size else IMAGE_SIZES
    wanted = (1, CUDA_BATCH) if device == "cuda" else (1,)
    batches = (fixed_batch,) if fixed_batch else wanted
    name = session.get_inputs()[0].name
    dtype = np.float16 if "float16" in session.get_inputs()[0].type else np.float32
    rows = []
    for imgsz in sizes:
        for batch in batches:
            tensor = np.random.default_rng(0).random((batch, 3, imgsz, imgsz)).astype(dtype)
            latencies = _time_calls(lambda t=tensor: session.run(None, {name: t}), seconds, WARMUP_CALLS[device])
            rows.append(
                _row(
                    "onnxruntime",
                    device,
                    imgsz,
                    batch,
                    latencies,
                    provider=session.get_providers()[0],
                    input_dtype=np.dtype(dtype).name,
                )
            )
    return rows


def run_bench(model: Path | None, device: str, seconds: float) -> dict:
    from vigil.bench.embed import host_info
    from vigil.detect import detector_family
    from vigil.yolov5_face import FAMILY as YOLOV5_FACE

    load_at_start = round(os.getloadavg()[0], 2)
    path, sha = _model(model)
    frame, frame_source = bench_frame()
    pt_path = path if path.suffix.lower() == ".pt" else path.with_suffix(".pt")
    onnx_path = path.with_suffix(".onnx")
    results: list[dict] = []
    for dev in _devices(device):
        if pt_path.is_file():
            results += bench_detector(pt_path, "ultralytics-torch", dev, frame, seconds, IMAGE_SIZES)
        if onnx_path.is_file():
            fixed_size = _onnx_shapes(_ort_session(onnx_path, "cpu"))[1]
            runtime = "yolov5-face-onnx" if detector_family(onnx_path) == YOLOV5_FACE else "ultralytics-onnx"
            results += bench_detector(
                onnx_path, runtime, dev, frame, seconds, (fixed_size,) if fixed_size else IMAGE_SIZES
            )
            results += bench_onnxruntime(onnx_path, dev, seconds)
    return {
        "benchmark": "detect",
        "model": str(path),
        "model_sha256": sha,
        "model_mb": round(path.stat().st_size / 2**20, 2),
        "onnx": str(onnx_path) if onnx_path.is_file() else None,
        "input": frame_source,
        "frame_shape": list(frame.shape),
        "seconds_per_measurement": seconds,
        "results": results,
        "host": {**host_info(), **_torch_info(), "load_average_1m_at_start": load_at_start},
    }


def _torch_info() -> dict:
    import torch
    import ultralytics

    return {
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "ultralytics": ultralytics.__version__,
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),  # other work on the machine skews CPU numbers
    }


def run_cli(args: argparse.Namespace) -> int:
    """`vigil bench detect --json OUT [--model PATH] [--device auto|cpu|cuda] [--seconds S]`."""
    report = run_bench(args.model, args.device, float(args.seconds))
    save_report(report, args.json)
    return 0
