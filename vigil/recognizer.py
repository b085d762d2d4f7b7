"""The recognizer factory: the embedder for a manifest recognizer, one ONNX model or an ensemble of them.

Every caller (the runtime, ``vigil eval``, ``vigil bench embed``, ``pipelines/``) builds its recognizer here, so a
new recognizer format is one branch in :func:`build_embedder`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from vigil.embed import OnnxEmbedder
from vigil.ensemble import EnsembleEmbedder, build_ensemble_embedder
from vigil.models import ModelRegistry, ModelSpec
from vigil.onnx_session import DEFAULT_PROVIDERS


def build_embedder(
    spec: ModelSpec,
    providers: Sequence[str] = DEFAULT_PROVIDERS,
    batch_size: int = 64,
    flip_average: bool = False,
    logger: logging.Logger | None = None,
    registry: ModelRegistry | None = None,
) -> OnnxEmbedder | EnsembleEmbedder:
    """The embedder for ``spec``: an :class:`OnnxEmbedder`, or for ``format: ensemble`` an
    :class:`EnsembleEmbedder` over its members (looked up in ``registry``, the shipped manifest by default)."""
    if spec.format == "ensemble":
        return build_ensemble_embedder(spec, providers, batch_size, flip_average, logger, registry)
    return OnnxEmbedder(spec.path, providers=providers, batch_size=batch_size, logger=logger, flip_average=flip_average)
