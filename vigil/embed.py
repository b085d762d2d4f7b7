"""Face embedding with an ONNX recognizer (onnxruntime; CUDA first, CPU fallback).

The model contract (pipelines/recognizer/convert.py writes it): input uint8 [N, S, S, 3] BGR chips with dynamic
N, output float32 [N, D] embeddings, L2-normalised inside the graph. The embedder re-normalises anyway.
The checksum is verified by vigil.models before an embedder is built.

``flip_average``: each chip is embedded together with its mirror image and the two unit vectors are summed and
re-normalised (test-time flip augmentation; the alignment template is left-right symmetric, so the mirror is an
aligned face too). Twice the network work per face; the embedding becomes mirror-invariant. Cosine scales shift,
so a model's calibrated threshold for this mode is its own manifest key (vigil.models.calibrated_match_threshold).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vigil.errors import ModelError
from vigil.onnx_session import DEFAULT_PROVIDERS, machine_providers, open_session


class OnnxEmbedder:
    """Batched embeddings of aligned chips.

    ``provider``: the execution provider the session got (e.g. "CUDAExecutionProvider");
    ``input_size``: S of the S x S chips the model takes; ``dim``: D of its embeddings.
    """

    def __init__(
        self,
        model_path: Path,
        providers: Sequence[str] = DEFAULT_PROVIDERS,
        batch_size: int = 64,
        logger: logging.Logger | None = None,
        flip_average: bool = False,
        spin_wait: bool = True,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {batch_size}")
        self.model_path = Path(model_path)
        self.batch_size = int(batch_size)
        self.flip_average = bool(flip_average)
        self._spin_wait = bool(spin_wait)  # False when several sessions take turns (an ensemble): see _session_options
        self._log = logger or logging.getLogger("vigil.embed")
        if not self.model_path.is_file():
            raise ModelError(f"{self.model_path}: model file not found")
        wanted = machine_providers(providers)
        self._session = self._create_session(wanted)
        self.provider: str = self._session.get_providers()[0]
        if providers and self.provider != providers[0]:
            expected = wanted[0] != providers[0]  # e.g. no NVIDIA driver: expected, not a fault
            (self._log.info if expected else self._log.warning)(
                "embedder %s: asked for %s, running on %s", self.model_path.name, providers[0], self.provider
            )
        self._input_name, self.input_size = self._read_input()
        self.dim: int = self._read_dim()
        self._log.info(
            "embedder %s: provider %s, input %dx%d, dim %d%s",
            self.model_path.name,
            self.provider,
            self.input_size,
            self.input_size,
            self.dim,
            ", flip-averaged" if self.flip_average else "",
        )

    def _create_session(self, wanted: list[str]):
        return open_session(self.model_path, wanted, self._session_options(), self._log, "embedder")

    def _session_options(self):
        """onnxruntime's CPU threads spin after each run waiting for the next one; two sessions called in turn (the
        members of an ensemble) then fight over the cores (measured: models/recognizer/dlib-scene-sface.md, "Speed").
        Members therefore run with ``spin_wait=False``."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        if not self._spin_wait:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        return options

    def _read_input(self) -> tuple[str, int]:
        inputs = self._session.get_inputs()
        shape = inputs[0].shape if len(inputs) == 1 else None
        ok = (
            shape is not None
            and len(shape) == 4
            and isinstance(shape[1], int)
            and shape[1] == shape[2]
            and shape[3] == 3
            and inputs[0].type == "tensor(uint8)"
        )
        if not ok or shape is None:
            got = [(i.name, i.type, i.shape) for i in inputs]
            raise ModelError(f"{self.model_path}: expected one uint8 input [N,S,S,3], got {got}")
        return inputs[0].name, int(shape[1])

    def _read_dim(self) -> int:
        outputs = self._session.get_outputs()
        shape = outputs[0].shape
        if len(shape) == 2 and isinstance(shape[1], int):
            return int(shape[1])
        probe = self._run(np.zeros((1, self.input_size, self.input_size, 3), np.uint8))
        if probe.ndim != 2:
            raise ModelError(f"{self.model_path}: expected output [N,D], got shape {probe.shape}")
        return int(probe.shape[1])

    def _run(self, chips: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._input_name: chips})[0]

    def embed(self, chips: np.ndarray) -> np.ndarray:
        """uint8 BGR chips [N, S, S, 3] -> float32 [N, D] unit-norm embeddings (N may be 0)."""
        check_chips(chips, self.input_size)
        if len(chips) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        # with flip averaging a run holds a chunk and its mirror: at most batch_size chips per call either way
        step = max(1, self.batch_size // 2) if self.flip_average else self.batch_size
        parts = [self._embed_chunk(np.ascontiguousarray(chips[i : i + step])) for i in range(0, len(chips), step)]
        return unit_rows(np.concatenate(parts).astype(np.float32, copy=False))

    def _embed_chunk(self, chips: np.ndarray) -> np.ndarray:
        if not self.flip_average:
            return self._run(chips)
        both = unit_rows(self._run(np.concatenate([chips, chips[:, :, ::-1]])))
        return both[: len(chips)] + both[len(chips) :]


def check_chips(chips, size: int) -> None:
    """ValueError unless ``chips`` is a uint8 array [N, size, size, 3] (the embedding stage's input)."""
    if not (isinstance(chips, np.ndarray) and chips.dtype == np.uint8 and chips.shape[1:] == (size, size, 3)):
        got = (getattr(chips, "dtype", type(chips)), getattr(chips, "shape", None))
        raise ValueError(f"chips must be uint8 [N,{size},{size},3], got {got}")


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """``vectors`` (..., D) scaled to unit length along the last axis (a zero vector stays zero)."""
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)
