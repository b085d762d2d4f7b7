"""The rebuilt YOLOv5-face nano (pipelines/detector/yolov5face_net.py): parity with onnxruntime on the source file,
export parity, and weight loading that refuses a graph it does not fit."""

from __future__ import annotations

import numpy as np
import pytest

SOURCE = ("weights", "yolov5n-0.5.onnx")
CROWD_IMAGE = ("wider200", "images", "val", "2_Demonstration_Demonstrators_2_378.jpg")


@pytest.fixture(scope="module")
def source(shared_data_module):
    return shared_data_module(*SOURCE)


@pytest.fixture(scope="module")
def shared_data_module():
    from conftest import require_data

    return require_data


def _fixed_input(shared) -> np.ndarray:
    """The WIDER-200 crowd image letterboxed to 640 as the runtime does: a real image, a fixed input."""
    import cv2

    from vigil.yolov5_face import letterbox, to_blob

    canvas, _ = letterbox(cv2.imread(str(shared(*CROWD_IMAGE))), 640, (640, 640))
    return to_blob([canvas])


def test_rebuilt_model_matches_onnxruntime_on_a_real_image(source, shared_data_module):
    import onnxruntime as ort
    import torch

    from pipelines.detector.yolov5face_net import source_model

    blob = _fixed_input(shared_data_module)
    expected = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"]).run(None, {"data": blob})
    with torch.no_grad(), torch.backends.mkldnn.flags(enabled=False):  # reference convs (see yolov5face_net.parity)
        got = [t.numpy() for t in source_model(source)(torch.from_numpy(blob))]
    for e, g in zip(expected, got):
        assert e.shape == g.shape
        assert float(np.abs(e - g).max()) <= 1e-4


def test_export_reproduces_the_source_and_takes_any_batch_and_shape(source, shared_data_module, tmp_path):
    import onnxruntime as ort

    from pipelines.detector.yolov5face_net import export_onnx, source_model

    path = export_onnx(source_model(source), tmp_path / "rebuilt.onnx")
    blob = _fixed_input(shared_data_module)
    expected = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"]).run(None, {"data": blob})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for e, g in zip(expected, session.run(None, {"data": blob})):
        assert float(np.abs(e - g).max()) <= 1e-5
    wide = session.run(None, {"data": np.zeros((2, 3, 384, 640), np.float32)})
    assert [o.shape for o in wide] == [(2, 3, 48, 80, 16), (2, 3, 24, 40, 16), (2, 3, 12, 20, 16)]
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["vigil.family"] == "yolov5-face" and "146" in meta["vigil.anchors_px"]


def test_weights_of_another_graph_are_refused(tmp_path):
    """The net's own export loads back; a net whose layer does not fit the graph is refused, naming the layer."""
    from pipelines.detector.yolov5face_net import Conv, YoloV5FaceNano, export_onnx, load_onnx_weights

    path = export_onnx(YoloV5FaceNano(), tmp_path / "ok.onnx")
    load_onnx_weights(YoloV5FaceNano(), path)
    narrower = YoloV5FaceNano()
    narrower.model[7] = Conv(256, 32, 1)
    with pytest.raises(ValueError, match="does not fit model.7.conv"):
        load_onnx_weights(narrower, path)
