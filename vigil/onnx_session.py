"""onnxruntime sessions for the model stages (recognizer, landmark refiner): which execution providers this machine
can run, and a session that falls back to the CPU with one warning instead of failing.

onnxruntime itself is imported only when a session is made (no work at import time).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vigil.errors import ModelError

DEFAULT_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")
CPU_PROVIDER = "CPUExecutionProvider"


def usable_providers(wanted: Sequence[str], available: Sequence[str], cuda_driver: bool) -> list[str]:
    """The ``wanted`` providers this machine can run, in order; CPU when none.

    onnxruntime-gpu lists CUDA (and TensorRT) as available even without an NVIDIA driver, then logs a red error
    when the session is created: without ``libcuda`` those providers are dropped up front.
    """
    gpu_only = {"CUDAExecutionProvider", "TensorrtExecutionProvider"}
    usable = [p for p in wanted if p in available and (cuda_driver or p not in gpu_only)]
    return usable or [CPU_PROVIDER]


def cuda_driver_present() -> bool:
    """True when the NVIDIA driver library (``libcuda.so.1``) loads."""
    import ctypes

    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def machine_providers(wanted: Sequence[str]) -> list[str]:
    """:func:`usable_providers` for this machine's onnxruntime and driver."""
    import onnxruntime as ort

    return usable_providers(list(wanted), ort.get_available_providers(), cuda_driver_present())


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def open_session(model_path: Path, wanted: list[str], options: Any, log: logging.Logger, role: str) -> Any:
    """An onnxruntime session on ``wanted`` (already filtered by :func:`usable_providers`), else on the CPU;
    ModelError naming the file when neither loads. ``role`` names the stage in the fallback warning.
    ``options``: an ``onnxruntime.SessionOptions``."""
    import onnxruntime as ort

    try:
        return ort.InferenceSession(str(model_path), options, providers=wanted)
    except Exception as exc:  # onnxruntime raises several exception types for bad files and providers
        if wanted == [CPU_PROVIDER]:
            raise ModelError(f"{model_path}: cannot load ONNX model ({_one_line(exc)})") from exc
        log.warning(
            "%s %s: %s failed (%s); falling back to CPU", role, Path(model_path).name, wanted[0], _one_line(exc)
        )
    try:
        return ort.InferenceSession(str(model_path), options, providers=[CPU_PROVIDER])
    except Exception as exc:
        raise ModelError(f"{model_path}: cannot load ONNX model ({_one_line(exc)})") from exc
