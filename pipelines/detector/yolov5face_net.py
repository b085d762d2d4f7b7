"""A trainable PyTorch YOLOv5-face nano (yolov5n-0.5), rebuilt from the ONNX file's weights.

The source is ``../shared/data/weights/yolov5n-0.5.onnx`` (deepcam-cn/yolov5-face, GPL-3.0): trained on the WIDER
FACE train set, five landmarks, 0.44 M parameters. Its architecture, written here from the graph (layer indices as in
yolov5-face's ``yolov5n-0.5.yaml``, so the ONNX initializer names ``model.<i>...`` map one to one):

* 0: StemBlock (3x3/2 conv; a 1x1 + 3x3/2 branch beside a 2x2 max-pool; 1x1 fuse) -> 16 ch, stride 4
* 1-6: ShuffleNetV2 stages: 64 ch (stride 8, 1+3 blocks), 128 ch (stride 16, 1+7), 256 ch (stride 32, 1+3)
* 7-20: PAN neck: 1x1 conv, nearest upsample, concat, C3 (no shortcut) top-down to stride 8, then 3x3/2 convs and
  C3 bottom-up; every neck output has 64 channels
* 21: Detect, three 1x1 convs (64 -> 3 anchors x 16) at strides 8, 16, 32. Each anchor's 16 raw values are
  ``x, y, w, h, objectness, 10 landmark coordinates, class``.

``forward`` returns the three raw head tensors ``(N, 3, H/s, W/s, 16)``, the ONNX file's outputs
``stride_8/16/32`` (decoding lives in :mod:`vigil.detect` for the runtime and in :mod:`pipelines.detector.v5loss`
for training).

Batch-norm: the ONNX graph has every batch-norm folded into the convolution before it (weight scaled, bias added),
and the per-channel statistics that would undo the fold are not in the file. This rebuild **trains without
batch-norm**: each convolution keeps the folded weight and bias. A folded conv is exactly a conv followed by a
batch-norm frozen in eval mode, the usual choice when fine-tuning a detector with small batches (here 8-16 images
on a CPU, where batch statistics are noisy), so nothing of the pretrained function is lost and export stays exact.
Re-inserting batch-norm as identity would not be identity in training mode (it would renormalise every channel by
the batch's statistics, which the folded weights were never trained for).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

NUM_OUTPUTS = 16  # per anchor: x, y, w, h, objectness, 5 x (x, y) landmarks, class
NUM_ANCHORS = 3
STRIDES = (8, 16, 32)
# anchor (w, h) in input pixels, per stride (yolov5-face's yolov5n-0.5.yaml; the ONNX file does not carry them)
ANCHORS_PX = (((4, 5), (8, 10), (13, 16)), ((23, 29), (43, 55), (73, 105)), ((146, 217), (231, 300), (335, 433)))
OUTPUT_NAMES = ("stride_8", "stride_16", "stride_32")
INPUT_NAME = "data"


class Conv(nn.Module):
    """Conv (folded batch-norm: with bias) + SiLU, yolov5's ``Conv``."""

    def __init__(self, c_in: int, c_out: int, k: int = 1, s: int = 1, act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, s, k // 2, bias=True)
        self.act = nn.SiLU() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


class StemBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.stem_1 = Conv(c_in, c_out, 3, 2)
        self.stem_2a = Conv(c_out, c_out // 2, 1, 1)
        self.stem_2b = Conv(c_out // 2, c_out, 3, 2)
        self.stem_2p = nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True)
        self.stem_3 = Conv(c_out * 2, c_out, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem_1(x)
        return self.stem_3(torch.cat((self.stem_2b(self.stem_2a(x)), self.stem_2p(x)), 1))


def _depthwise(channels: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, 3, stride, 1, groups=channels, bias=True)


def channel_shuffle(x: torch.Tensor, groups: int = 2) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleV2Block(nn.Module):
    """ShuffleNetV2 unit with SiLU (yolov5-face's ``ShuffleV2Block``); batch-norms folded into the convs."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        half = c_out // 2
        if stride > 1:
            self.branch1 = nn.Sequential(_depthwise(c_in, stride), nn.Conv2d(c_in, half, 1, bias=True), nn.SiLU())
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(
            nn.Conv2d(c_in if stride > 1 else half, half, 1, bias=True),
            nn.SiLU(),
            _depthwise(half, stride),
            nn.Conv2d(half, half, 1, bias=True),
            nn.SiLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class Bottleneck(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.cv1 = Conv(c, c, 1)
        self.cv2 = Conv(c, c, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv2(self.cv1(x))  # the neck's C3 blocks have no shortcut


class C3(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        hidden = c_out // 2
        self.cv1 = Conv(c_in, hidden, 1)
        self.cv2 = Conv(c_in, hidden, 1)
        self.cv3 = Conv(2 * hidden, c_out, 1)
        self.m = nn.Sequential(Bottleneck(hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class Detect(nn.Module):
    def __init__(self, channels: Sequence[int]) -> None:
        super().__init__()
        self.m = nn.ModuleList(nn.Conv2d(c, NUM_ANCHORS * NUM_OUTPUTS, 1) for c in channels)

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        outputs = []
        for conv, x in zip(self.m, features):
            y = conv(x)
            n, _, h, w = y.shape
            outputs.append(y.view(n, NUM_ANCHORS, NUM_OUTPUTS, h, w).permute(0, 1, 3, 4, 2).contiguous())
        return outputs


class _Passthrough(nn.Module):
    """Placeholder for yolov5's parameter-free layers (Upsample, Concat), kept so layer indices match the source."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class YoloV5FaceNano(nn.Module):
    """yolov5n-0.5-face: float NCHW RGB in [0, 1] -> three raw heads ``(N, 3, H/s, W/s, 16)``; H, W multiples of 32."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            StemBlock(3, 16),
            ShuffleV2Block(16, 64, 2),
            nn.Sequential(*(ShuffleV2Block(64, 64, 1) for _ in range(3))),
            ShuffleV2Block(64, 128, 2),
            nn.Sequential(*(ShuffleV2Block(128, 128, 1) for _ in range(7))),
            ShuffleV2Block(128, 256, 2),
            nn.Sequential(*(ShuffleV2Block(256, 256, 1) for _ in range(3))),
            Conv(256, 64, 1),
            _Passthrough(),
            _Passthrough(),
            C3(192, 64),  # 7-10
            Conv(64, 64, 1),
            _Passthrough(),
            _Passthrough(),
            C3(128, 64),  # 11-14: stride 8 out
            Conv(64, 64, 3, 2),
            _Passthrough(),
            C3(128, 64),  # 15-17: stride 16 out
            Conv(64, 64, 3, 2),
            _Passthrough(),
            C3(128, 64),  # 18-20: stride 32 out
            Detect((64, 64, 64)),
        ]
        self.model = nn.ModuleList(layers)

    def backbone_and_neck(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The three 64-channel features the head reads (strides 8, 16, 32)."""
        m = self.model
        x = m[0](x)
        p3 = m[2](m[1](x))
        p4 = m[4](m[3](p3))
        p5 = m[6](m[5](p4))
        h7 = m[7](p5)
        h10 = m[10](torch.cat((F.interpolate(h7, scale_factor=2.0, mode="nearest"), p4), 1))
        h11 = m[11](h10)
        out8 = m[14](torch.cat((F.interpolate(h11, scale_factor=2.0, mode="nearest"), p3), 1))
        out16 = m[17](torch.cat((m[15](out8), h11), 1))
        out32 = m[20](torch.cat((m[18](out16), h7), 1))
        return [out8, out16, out32]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model[21](self.backbone_and_neck(x))

    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.model[21].parameters())

    def backbone_parameters(self) -> list[nn.Parameter]:
        return [p for i in range(7) for p in self.model[i].parameters()]

    def neck_parameters(self) -> list[nn.Parameter]:
        return [p for i in range(7, 21) for p in self.model[i].parameters()]


# ---------------------------------------------------------------- weights from the ONNX graph


def onnx_conv_weights(onnx_path: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(initializer name, weight, bias) of every Conv node of the graph, in graph order."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path)).graph
    inits = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    convs = []
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        weight, bias = inits[node.input[1]], inits[node.input[2]] if len(node.input) > 2 else None
        if bias is None:
            bias = np.zeros(weight.shape[0], np.float32)
        convs.append((node.input[1], weight, bias))
    return convs


def _ordered_convs(model: YoloV5FaceNano) -> tuple[list[tuple[str, nn.Conv2d]], dict[str, nn.Conv2d]]:
    """(the ShuffleNet convs in execution order, the other convs by their yolov5 name ``model.i...conv``)."""
    shuffle, named = [], {}
    for name, module in model.named_modules():
        if not isinstance(module, nn.Conv2d):
            continue
        index = int(name.split(".")[1])
        if 1 <= index <= 6:
            shuffle.append((name, module))
        else:
            named[name] = module
    return shuffle, named


def load_onnx_weights(model: YoloV5FaceNano, onnx_path: Path) -> YoloV5FaceNano:
    """Copy the ONNX graph's (folded) conv weights into ``model``; every conv filled exactly once, shapes checked.

    Named initializers (``model.0.stem_1.conv.weight``, ``model.21.m.0.weight``) map by name; the source's ShuffleNet
    stages' initializers (numbered by its exporter after folding) map in graph order, the blocks' execution order.
    """
    shuffle, named = _ordered_convs(model)
    every = {**dict(shuffle), **named}
    filled: set[str] = set()
    for init_name, weight, bias in onnx_conv_weights(onnx_path):
        key = init_name.rsplit(".", 1)[0]
        if key in every:  # our own exports name every layer
            target_name = key
        elif init_name.startswith("model."):
            raise ValueError(f"{onnx_path}: initializer {init_name} has no matching layer")
        else:
            unfilled = [name for name, _ in shuffle if name not in filled]
            if not unfilled:
                raise ValueError(f"{onnx_path}: more ShuffleNet convs in the graph than in the model")
            target_name = unfilled[0]
        conv = every[target_name]
        if tuple(conv.weight.shape) != weight.shape or conv.bias is None or tuple(conv.bias.shape) != bias.shape:
            raise ValueError(
                f"{onnx_path}: {init_name} {weight.shape} does not fit {target_name} {tuple(conv.weight.shape)}"
            )
        with torch.no_grad():
            conv.weight.copy_(torch.from_numpy(np.array(weight)))
            conv.bias.copy_(torch.from_numpy(np.array(bias)))
        filled.add(target_name)
    missing = [name for name, _ in shuffle if name not in filled] + [name for name in named if name not in filled]
    if missing:
        raise ValueError(f"{onnx_path}: no weights for {len(missing)} layers, e.g. {missing[:3]}")
    return model


def source_model(onnx_path: Path) -> YoloV5FaceNano:
    """The source ONNX file's network as a trainable PyTorch module (eval mode; call ``.train()`` to fine-tune)."""
    return load_onnx_weights(YoloV5FaceNano(), onnx_path).eval()


# ---------------------------------------------------------------- export


def export_onnx(model: YoloV5FaceNano, path: Path, metadata: dict[str, str] | None = None, opset: int = 17) -> Path:
    """The runtime's ONNX: input ``data`` float32 ``[N, 3, H, W]`` RGB in [0, 1] (dynamic N, H, W; multiples of 32),
    outputs ``stride_8/16/32`` raw ``[N, 3, H/s, W/s, 16]``, the source file's layout. Anchors and strides are
    written to the metadata (``vigil.anchors_px``, ``vigil.strides``) with ``metadata``; weights stay float32."""
    import json
    import warnings

    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros(1, 3, 640, 640)
    dynamic = {INPUT_NAME: {0: "n", 2: "h", 3: "w"}}
    dynamic.update({name: {0: "n", 2: f"h{s}", 3: f"w{s}"} for name, s in zip(OUTPUT_NAMES, STRIDES)})
    tmp = path.with_suffix(".tmp.onnx")
    was_training = model.training
    model.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer chatter
        torch.onnx.export(
            model,
            (dummy,),
            str(tmp),
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=dynamic,
            opset_version=opset,
            dynamo=False,
            do_constant_folding=True,
        )
    model.train(was_training)
    graph = onnx.load(str(tmp))
    tmp.unlink()
    props = {
        "vigil.family": "yolov5-face",
        "vigil.anchors_px": json.dumps(ANCHORS_PX),
        "vigil.strides": json.dumps(STRIDES),
        "vigil.input": "data float32 [N,3,H,W] RGB/255, letterboxed with grey 114",
        "vigil.output": "stride_8/16/32 raw [N,3,H/s,W/s,16]: x y w h obj 10 landmarks cls",
    }
    props.update(metadata or {})
    for key, value in props.items():
        graph.metadata_props.add(key=key, value=str(value))
    onnx.checker.check_model(graph)
    onnx.save(graph, str(path))
    return path


# ---------------------------------------------------------------- command line


def parity(source: Path, images: Sequence[Path], imgsz: int = 640) -> dict:
    """Max |torch - onnxruntime| over the raw head outputs of ``images`` (letterboxed as the runtime does), with the
    largest output magnitude seen, plus the same for the rebuilt model's own export.

    Torch runs its reference convolutions (oneDNN off): oneDNN's fast algorithms, which training uses, round
    differently and land up to 5.5e-4 from onnxruntime on the same 100 images (1e-4 is float32's noise floor here:
    onnxruntime itself is up to 1.05e-4 from the float64 result)."""
    import tempfile

    import cv2
    import onnxruntime as ort

    from vigil.yolov5_face import letterbox, to_blob

    model = source_model(source)
    reference = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    with tempfile.TemporaryDirectory() as tmp:
        exported = ort.InferenceSession(
            str(export_onnx(model, Path(tmp) / "rebuilt.onnx")), providers=["CPUExecutionProvider"]
        )
    worst_torch = worst_export = largest = 0.0
    for path in images:
        image = cv2.imread(str(path))
        if image is None:
            raise SystemExit(f"{path}: not a readable image")
        blob = to_blob([letterbox(image, imgsz, (imgsz, imgsz))[0]])
        expected = reference.run(None, {INPUT_NAME: blob})
        with torch.no_grad(), torch.backends.mkldnn.flags(enabled=False):
            got = [t.numpy() for t in model(torch.from_numpy(blob))]
        worst_torch = max(worst_torch, *(float(np.abs(e - g).max()) for e, g in zip(expected, got)))
        worst_export = max(
            worst_export,
            *(float(np.abs(e - g).max()) for e, g in zip(expected, exported.run(None, {INPUT_NAME: blob}))),
        )
        largest = max(largest, *(float(np.abs(e).max()) for e in expected))
    return {
        "images": len(images),
        "max_abs_torch_vs_onnxruntime": worst_torch,
        "max_abs_export_vs_source": worst_export,
        "largest_abs_output": largest,
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m pipelines.detector.yolov5face_net [--parity-images N] [--export OUT.onnx]``."""
    import argparse
    import json

    from vigil.paths import data_path, repo_path

    parser = argparse.ArgumentParser(
        description="Rebuild yolov5n-0.5-face from its ONNX file: parity check and export."
    )
    parser.add_argument("--source", type=Path, default=data_path("weights", "yolov5n-0.5.onnx"))
    parser.add_argument(
        "--parity-images", type=int, default=0, help="check parity on the first N WIDER-200 and N LFW images"
    )
    parser.add_argument("--export", type=Path, help="write the rebuilt source as the runtime's ONNX here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.parity_images:
        wider = sorted(data_path("wider200", "images", "val").glob("*.jpg"))[: args.parity_images]
        lfw = sorted(data_path("lfw").glob("*/*.jpg"))[: args.parity_images]
        print(json.dumps(parity(args.source, wider + lfw), indent=1))
    if args.export:
        print(f"wrote {export_onnx(source_model(args.source), repo_path(args.export))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
