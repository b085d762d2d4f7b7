"""`vigil doctor [--config C]`: execution providers, model checksums, each camera's effective recognition settings
(its overrides over the globals), and whether each camera opens in time.

``--config`` given and missing is an error (exit 2), not a pass; without ``--config``, ``config.yaml`` in the current
folder is checked when there is one, else the built-in defaults (said so on the first line).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from vigil.camera_settings import camera_settings_table, format_camera_settings
from vigil.config import VigilConfig
from vigil.errors import VigilError
from vigil.models import ModelRegistry, verify_checksum
from vigil.redact import mask_url
from vigil.rtsp_probe import is_plain_rtsp, probe_rtsp
from vigil.runtime import effective_rules, load_config_or_default, resolve_models

DEFAULT_CONFIG = Path("config.yaml")


def run_cli(args: argparse.Namespace) -> int:
    path = args.config if args.config is not None else (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
    config = load_config_or_default(path)  # a --config that does not exist is a ConfigError (exit 2)
    print(f"config: {path}" if path is not None else "config: none given and no ./config.yaml: the built-in defaults")
    problems = check_providers() + check_models() + check_camera_settings(config) + check_cameras(config)
    print("doctor: all checks passed" if not problems else f"doctor: {problems} problem(s) found")
    return 0 if not problems else 1


def check_providers() -> int:
    import onnxruntime

    from vigil.onnx_session import DEFAULT_PROVIDERS, cuda_driver_present, usable_providers

    providers = onnxruntime.get_available_providers()
    driver = cuda_driver_present()
    print(
        f"onnxruntime {onnxruntime.__version__}: providers {', '.join(providers)}; "
        f"NVIDIA driver {'yes' if driver else 'no'}"
    )
    print(f"recognizer will run on: {usable_providers(DEFAULT_PROVIDERS, providers, driver)[0]}")
    try:
        import torch

        cuda = torch.cuda.is_available()
        name = torch.cuda.get_device_name(0) if cuda else "none"
        print(f"torch {torch.__version__}: CUDA {'yes' if cuda else 'no'} (GPU: {name})")
    except ImportError:
        print("torch: not installed")
    return 0


def check_models() -> int:
    problems = 0
    try:
        registry = ModelRegistry()
    except VigilError as exc:
        print(f"models: FAIL {exc}")
        return 1
    for spec in registry.specs.values():
        try:
            verify_checksum(spec)
            print(f"model {spec.name} ({spec.kind}): ok, sha256 {str(spec.sha256)[:12]}...")
        except VigilError as exc:
            problems += 1
            print(f"model {spec.name} ({spec.kind}): FAIL {exc}")
    return problems


def check_camera_settings(config: VigilConfig) -> int:
    """Print the match threshold, margin, minimum face size and unknown-face setting each camera runs with."""
    try:
        models = resolve_models(config)
        rules = effective_rules(config, models)
    except VigilError as exc:
        print(f"camera settings: FAIL {exc}")
        return 1
    table = camera_settings_table(config.cameras, rules, config.detector.min_face_px)
    source = "rules.match_threshold" if config.rules.match_threshold is not None else models.recognizer.name
    print(f"camera settings (effective; global match_threshold from {source}; * = the camera's own override):")
    for line in format_camera_settings(table):
        print(line)
    return 0


def check_cameras(config: VigilConfig) -> int:
    from vigil.capture import open_capture

    problems = 0
    for camera in config.cameras:
        streams = [("", camera.source)]
        if camera.detect_source is not None:  # a two-source camera: both streams must answer
            streams = [(" main stream", camera.source), (" detection sub-stream", camera.detect_source)]
        for label, source in streams:
            start = time.monotonic()
            probe = probe_rtsp(str(source), camera.open_timeout_s) if is_plain_rtsp(source) else None
            capture = None
            if probe is None or not probe.auth_failed:  # a refused password is not tried twice (camera lockouts)
                capture = open_capture(source, camera.open_timeout_s, camera.read_timeout_s)
            ok, image = (False, None) if capture is None else capture.read()
            took = time.monotonic() - start
            if capture is not None:
                capture.release()
            limit = f"{camera.open_timeout_s:.0f}+{camera.read_timeout_s:.0f} s"
            ok = bool(ok) and image is not None
            size = f"{image.shape[1]}x{image.shape[0]}" if image is not None else ""
            status = f"ok, {size}" if ok else f"FAIL: no frame within {limit}"
            if not ok and probe is not None and probe.refusal is not None:
                status = f"FAIL: {probe.describe()}"
            print(f"camera {camera.name}{label} ({mask_url(source)}): {status} ({took:.1f} s)")
            problems += 0 if ok else 1
    return problems
