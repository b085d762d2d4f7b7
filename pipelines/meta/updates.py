"""The episodic updates, as small functions of parameter mappings (torch tensors), independent of the model.

* Reptile (Nichol et al. 2018): adapt a copy of the parameters to one task with a few SGD steps, then move the
  parameters toward the adapted ones: ``phi <- phi + epsilon (phi' - phi)``. :func:`reptile_direction` returns
  ``phi - phi'`` so that it can be handed to any optimiser as a gradient (plain SGD with rate ``epsilon`` is exactly
  the update above; the trainer uses the same AdamW, warm-up and decay for every method).
* First-order MAML (Finn et al. 2017, first-order variant): adapt a copy on the task's support set, then take the
  gradient of the query loss *at the adapted parameters* and apply it to the original ones (the second-order term
  through the inner steps is dropped).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from vigil.adapter import inner_adapt

Params = Mapping[str, Any]


def reptile_direction(params: Params, adapted: Params) -> dict:
    """``phi - phi'`` per parameter (an optimiser step against this "gradient" moves ``phi`` toward ``phi'``)."""
    return {k: (params[k] - adapted[k]).detach() for k in params}


def reptile_update(params: Params, adapted: Params, epsilon: float) -> dict:
    """``phi + epsilon (phi' - phi)``."""
    return {k: (params[k] + epsilon * (adapted[k] - params[k])).detach() for k in params}


def first_order_meta_gradient(
    params: Params,
    support_loss: Callable[[Params], Any],
    query_loss: Callable[[Params], Any],
    steps: int,
    lr: float,
    also: Params | None = None,
) -> tuple[dict, dict, float]:
    """(gradient of ``query_loss`` at the adapted parameters, the adapted parameters, that loss's value).

    ``also``: other leaf tensors the query loss uses (a temperature, say), not adapted in the inner loop: their
    gradients are returned under their names too."""
    import torch

    adapted = inner_adapt(params, support_loss, steps, lr)
    loss = query_loss(adapted)
    leaves = {**adapted, **(also or {})}
    grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
    gradient = {k: (g if g is not None else torch.zeros_like(leaves[k])).detach() for k, g in zip(leaves, grads)}
    return gradient, adapted, float(loss.detach())
