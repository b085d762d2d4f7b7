"""The landmark refiner network: a small CNN from a face crop to five points, and its ONNX export.

Contract of the exported ONNX (what ``vigil.refine`` expects):
    input  ``crops``     uint8  [N, S, S, 3] BGR, S = the crop size (``vigil.refine.crop_transform`` geometry)
    output ``landmarks`` float32 [N, 5, 2] in crop units (0..1 of S), vigil's point order
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _torch():
    import torch

    return torch


def build_network(crop_px: int = 96, width: int = 32):
    """Conv stages halving the resolution down to crop_px / 16, then a linear layer to 10 numbers.

    The spatial map is flattened, not pooled: where a feature is matters for a point's position."""
    torch = _torch()
    nn = torch.nn

    def block(cin: int, cout: int, stride: int) -> Any:
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
        )

    module: Any = nn.Module  # torch is imported lazily, so the base class is a runtime value

    class LandmarkNet(module):
        def __init__(self) -> None:
            super().__init__()
            chans = [width, width * 2, width * 3, width * 4, width * 5]
            layers, cin = [], 3
            for cout in chans:
                layers += [block(cin, cout, 2), block(cout, cout, 1)]
                cin = cout
            self.features = nn.Sequential(*layers)
            side = crop_px // 32
            self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.1), nn.Linear(cin * side * side, 10))
            self.crop_px = crop_px

        def forward(self, x):  # float NCHW BGR 0..255
            x = x / 127.5 - 1.0
            return self.head(self.features(x)).view(-1, 5, 2) + 0.5

    return LandmarkNet()


def export_onnx(model, path: Path, crop_px: int, fp16_weights: bool = True) -> Path:
    """ONNX with the uint8 NHWC BGR input contract above, dynamic batch; weights stored fp16 (computed in fp32)
    unless ``fp16_weights`` is False."""
    torch = _torch()

    module: Any = torch.nn.Module  # torch is imported lazily, so the base class is a runtime value

    class Wrapped(module):
        def __init__(self, inner) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, crops):
            return self.inner(crops.permute(0, 3, 1, 2).float())

    wrapped = Wrapped(model.eval().float()).eval()
    dummy = torch.zeros(2, crop_px, crop_px, 3, dtype=torch.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        wrapped,
        (dummy,),
        str(path),
        input_names=["crops"],
        output_names=["landmarks"],
        dynamic_axes={"crops": {0: "n"}, "landmarks": {0: "n"}},
        opset_version=17,
        dynamo=False,
    )
    if fp16_weights:
        import onnx

        from pipelines.recognizer.convert import weights_to_fp16

        graph = onnx.load(str(path))
        weights_to_fp16(graph)
        onnx.save(graph, str(path))
    return path
