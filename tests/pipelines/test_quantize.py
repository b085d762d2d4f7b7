"""pipelines.recognizer.quantize: an old-opset graph is lifted to the opset that per-channel QDQ needs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from pipelines.recognizer.quantize import MIN_QDQ_OPSET, upgrade_opset

W = np.random.default_rng(1).normal(size=(2, 3, 3, 3)).astype(np.float32)


def conv_model(path: Path, opset: int) -> Path:
    """float [N, 3, 6, 6] -> Conv (2 filters) -> Relu."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])]
    graph = helper.make_graph(
        nodes,
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 6, 6])],
        [numpy_helper.from_array(W, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    onnx.save(model, str(path))
    return path


def run(path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def opset_of(path: Path) -> int:
    return next(o.version for o in onnx.load(str(path)).opset_import if o.domain in ("", "ai.onnx"))


@pytest.mark.parametrize("opset, expected", [(11, MIN_QDQ_OPSET), (12, MIN_QDQ_OPSET), (13, 13), (17, 17)])
def test_upgrade_opset_lifts_old_graphs_only_and_keeps_their_output(tmp_path, opset, expected):
    path = conv_model(tmp_path / "m.onnx", opset)
    x = np.random.default_rng(2).normal(size=(2, 3, 6, 6)).astype(np.float32)
    before = run(path, x)
    assert upgrade_opset(path) == expected
    assert opset_of(path) == expected
    np.testing.assert_allclose(run(path, x), before, atol=1e-6)
