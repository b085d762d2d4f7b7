"""The ONNX weight storage both exports use (detector and recognizer): fp16 initializers cast back to fp32 give the
same outputs, in a smaller file."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.recognizer.convert import weights_to_fp16


def tiny_model(weights: np.ndarray, bias: np.ndarray):
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", weights.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", weights.shape[1]])],
        [numpy_helper.from_array(weights, "w"), numpy_helper.from_array(bias, "b")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


def run(model, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.mark.parametrize("shape", [(16, 16), (64, 32)])  # every tensor >= FP16_MIN_ELEMENTS values
def test_fp16_storage_keeps_outputs_and_halves_the_weights(shape):
    import onnx

    rng = np.random.default_rng(0)
    # weights that are exactly representable in fp16, as in an Ultralytics checkpoint
    weights = rng.normal(size=shape).astype(np.float16).astype(np.float32)
    bias = rng.normal(size=shape[1]).astype(np.float16).astype(np.float32)
    x = rng.normal(size=(3, shape[0])).astype(np.float32)
    before = tiny_model(weights, bias)
    expected, size_before = run(before, x), len(before.SerializeToString())
    assert weights_to_fp16(before) == 2  # in place
    onnx.checker.check_model(before)
    assert all(init.data_type == onnx.TensorProto.FLOAT16 for init in before.graph.initializer)
    np.testing.assert_array_equal(run(before, x), expected)
    assert len(before.SerializeToString()) < 0.75 * size_before
