"""`vigil bench embed`: recognizer throughput (faces/s) at batch 1, 8 and 64, on CPU and on CUDA when there is one.

    vigil bench embed --json OUT [--model PATH] [--device auto|cpu|cuda] [--seconds 10]

Each measurement calls :meth:`vigil.embed.OnnxEmbedder.embed` (the runtime's own call: host copies and the
re-normalisation included) on random uint8 chips of the model's input size (the network's cost does not depend on
pixel values), after a warm-up, for about ``--seconds`` seconds (at least 3 calls). faces/s = batch x calls /
elapsed; per-call latency median and 90th percentile in ms. ``auto`` measures CPU and, when onnxruntime can create a
CUDA session, CUDA too; ``cuda`` fails when it cannot. CPU runs use onnxruntime's default thread count (all cores).
The JSON holds the numbers, the provider each run really got, the model (path, sha256) and the host.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np

from vigil.bench.report import save_report
from vigil.errors import ModelError, VigilError

BATCH_SIZES = (1, 8, 64)
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
WARMUP_CALLS = {"cpu": 2, "cuda": 10}
MIN_CALLS = 3
log = logging.getLogger("vigil.bench.embed")


def _model(path: Path | None):
    """(spec, sha256): the manifest's default recognizer, or ``path`` (verified when the manifest lists it)."""
    from vigil.models import ModelRegistry, ModelSpec, sha256_of

    try:
        spec = ModelRegistry().resolve("recognizer", path)
        return spec, spec.sha256 or sha256_of(spec.path)
    except ModelError:
        if path is None or not Path(path).is_file():
            raise
    user = ModelSpec(
        name=Path(path).stem, kind="recognizer", path=Path(path), sha256=None, input_size=(0, 0), format="onnx"
    )
    return user, sha256_of(Path(path))  # a user model with no manifest to compare against


def _devices(device: str) -> list[str]:
    if device not in ("auto", "cpu", "cuda"):
        raise VigilError(f"--device: expected auto, cpu or cuda, got {device!r}")
    return ["cpu", "cuda"] if device == "auto" else [device]


def _embedder(spec, device: str, batch: int, flip_average: bool = False):
    """The spec's embedder on exactly that device, or None when the provider is not usable here."""
    import onnxruntime as ort

    from vigil.recognizer import build_embedder

    if device == "cuda":
        if PROVIDERS["cuda"] not in ort.get_available_providers():
            return None
        if hasattr(ort, "preload_dlls"):
            try:
                ort.preload_dlls()
            except Exception as exc:  # missing CUDA/cuDNN libraries: the session below falls back and we report it
                log.debug("preload_dlls: %s", exc)
    # flip averaging runs a face and its mirror in one call: batch_size 2 x batch keeps `batch` faces per call
    embedder = build_embedder(
        spec,
        providers=[PROVIDERS[device]],
        batch_size=batch * (2 if flip_average else 1),
        logger=log,
        flip_average=flip_average,
    )
    return embedder if embedder.provider == PROVIDERS[device] else None


def measure(embedder, batch: int, seconds: float, warmup: int) -> dict:
    """Time ``embedder.embed`` on a batch of random chips for about ``seconds`` s."""
    size = embedder.input_size
    chips = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    for _ in range(warmup):
        embedder.embed(chips)
    latencies: list[float] = []
    started = time.monotonic()
    while len(latencies) < MIN_CALLS or time.monotonic() - started < seconds:
        t0 = time.monotonic()
        embedder.embed(chips)
        latencies.append(time.monotonic() - t0)
    elapsed = sum(latencies)
    return {
        "batch": batch,
        "calls": len(latencies),
        "faces_per_s": round(batch * len(latencies) / elapsed, 1),
        "latency_ms_median": round(1000 * float(np.median(latencies)), 3),
        "latency_ms_p90": round(1000 * float(np.percentile(latencies, 90)), 3),
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _gpu_name() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def host_info() -> dict:
    import onnxruntime as ort

    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "gpu": _gpu_name(),
        "onnxruntime": ort.__version__,
        "available_providers": ort.get_available_providers(),
    }


def run_bench(model: Path | None, device: str, seconds: float, flip_average: bool = False) -> dict:
    spec, sha = _model(model)
    path = spec.path
    results, unavailable = [], []
    for dev in _devices(device):
        for batch in BATCH_SIZES:
            embedder = _embedder(spec, dev, batch, flip_average)
            if embedder is None:
                unavailable.append(dev)
                break
            row = measure(embedder, batch, seconds, WARMUP_CALLS[dev])
            row.update(device=dev, provider=embedder.provider, input_size=embedder.input_size, dim=embedder.dim)
            results.append(row)
            print(
                f"{dev:4s} batch {batch:3d}: {row['faces_per_s']:10.1f} faces/s  (median "
                f"{row['latency_ms_median']:.2f} ms per call, {row['calls']} calls)",
                flush=True,
            )
    if device == "cuda" and unavailable:
        raise VigilError(f"{path}: CUDAExecutionProvider is not usable on this machine (onnxruntime fell back to CPU)")
    return {
        "benchmark": "embed",
        "model": str(path),
        "model_sha256": sha,
        "flip_average": flip_average,
        "input": "random uint8 BGR chips, S x S x 3 (S = the model's input size)",
        "seconds_per_measurement": seconds,
        "results": results,
        "unavailable_devices": unavailable,
        "host": host_info(),
    }


def run_cli(args: argparse.Namespace) -> int:
    report = run_bench(args.model, args.device, float(args.seconds), bool(args.flip_average))
    save_report(report, args.json)
    return 0
