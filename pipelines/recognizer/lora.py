"""LoRA for convolutions: a frozen conv plus a trainable low-rank residual path that merges back exactly.

``LoRAConv2d(conv, rank, alpha)`` computes ``conv(x) + (alpha / rank) * up(down(x))`` where ``down`` is a
k x k conv with the frozen conv's stride and padding and ``rank`` output channels, and ``up`` is a 1x1
conv back to the output channels, initialised to zero (so training starts at the pretrained function).
Both paths are linear in x with the same receptive field, so ``merge_lora`` folds the pair into the
conv's own weight (``W + s * up @ down``): the exported network has the original architecture and the
ONNX contract is unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn


class LoRAConv2d(nn.Module):
    """A frozen ``nn.Conv2d`` with a low-rank trainable update (rank ``rank``, scale ``alpha / rank``)."""

    def __init__(self, conv: nn.Conv2d, rank: int, alpha: float) -> None:
        super().__init__()
        if conv.groups != 1 or conv.dilation != (1, 1):
            raise ValueError("lora: only plain convolutions (groups=1, dilation=1) are supported")
        self.conv = conv
        for p in self.conv.parameters():
            p.requires_grad_(False)
        self.down = nn.Conv2d(conv.in_channels, rank, conv.kernel_size, conv.stride, conv.padding, bias=False)
        self.up = nn.Conv2d(rank, conv.out_channels, 1, bias=False)
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.up.weight)
        self.scaling = float(alpha) / rank
        self.down.to(conv.weight.device)
        self.up.to(conv.weight.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + self.up(self.down(x)) * self.scaling

    @torch.no_grad()
    def merged(self) -> nn.Conv2d:
        """A plain conv equal to this module's function."""
        conv = nn.Conv2d(
            self.conv.in_channels,
            self.conv.out_channels,
            self.conv.kernel_size,
            self.conv.stride,
            self.conv.padding,
            bias=self.conv.bias is not None,
        ).to(self.conv.weight.device)
        delta = torch.einsum("or,rikl->oikl", self.up.weight[:, :, 0, 0], self.down.weight) * self.scaling
        conv.weight.copy_(self.conv.weight + delta)
        if self.conv.bias is not None:
            conv.bias.copy_(self.conv.bias)
        return conv


def _replace(root: nn.Module, make: Callable[[str, nn.Module], nn.Module | None]) -> list[str]:
    """Replace each submodule for which ``make(name, module)`` returns a module; returns the replaced names."""
    done = []
    for name, module in list(root.named_modules()):
        new = make(name, module)
        if new is None:
            continue
        parent_name, _, child = name.rpartition(".")
        setattr(root.get_submodule(parent_name) if parent_name else root, child, new)
        done.append(name)
    return done


def add_lora(root: nn.Module, rank: int, alpha: float, include: Callable[[str], bool]) -> list[str]:
    """Wrap every ``nn.Conv2d`` whose qualified name passes ``include`` in a LoRAConv2d; returns the names."""
    if rank < 1:
        raise ValueError(f"lora: rank must be >= 1, got {rank}")
    return _replace(
        root,
        lambda name, m: (
            LoRAConv2d(m, rank, alpha)
            if isinstance(m, nn.Conv2d)
            and not isinstance(m, LoRAConv2d)
            and include(name)
            and not name.endswith((".down", ".up"))
            else None
        ),
    )


def merge_lora(root: nn.Module) -> list[str]:
    """Replace every LoRAConv2d under ``root`` by its merged plain conv (in place); returns the names."""
    return _replace(root, lambda name, m: m.merged() if isinstance(m, LoRAConv2d) else None)
