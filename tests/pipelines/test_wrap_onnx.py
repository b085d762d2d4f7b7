"""pipelines.recognizer.wrap_onnx: a third-party NCHW float model becomes vigil's uint8 BGR chips -> unit vectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pipelines.recognizer.wrap_onnx import reference_embeddings, wrap
from vigil.embed import OnnxEmbedder
from vigil.errors import VigilError

S = 6
W = np.random.default_rng(0).normal(size=(3 * S * S, 5)).astype(np.float32)


def third_party_model(path: Path, weights_as_inputs: bool = True, inputs: int = 1) -> Path:
    """float [1, 3, S, S] -> Flatten -> MatMul -> [1, 5], batch fixed to 1, weights also listed as graph inputs
    (as old exporters did), raw (not normalised) output."""
    nodes = [helper.make_node("Flatten", ["data"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["fc1"])]
    graph_inputs = [
        helper.make_tensor_value_info(f"data{'' if i == 0 else i}", TensorProto.FLOAT, [1, 3, S, S])
        for i in range(inputs)
    ]
    if weights_as_inputs:
        graph_inputs.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, list(W.shape)))
    graph = helper.make_graph(
        nodes,
        "third_party",
        graph_inputs,
        [helper.make_tensor_value_info("fc1", TensorProto.FLOAT, [1, 5])],
        [numpy_helper.from_array(W, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize(
    "rgb, mean, std, fp16, atol",
    [
        (False, 0.0, 1.0, False, 1e-6),
        (True, 0.0, 1.0, False, 1e-6),
        (True, 127.5, 128.0, False, 1e-6),
        (True, 127.5, 128.0, True, 1e-3),
    ],
)
def test_wrapped_model_keeps_the_contract_and_the_embedding(tmp_path, rgb, mean, std, fp16, atol):
    source = third_party_model(tmp_path / "src.onnx")
    size, dim = wrap(source, tmp_path / "out.onnx", rgb, mean, std, fp16)
    assert (size, dim) == (S, 5)
    embedder = OnnxEmbedder(tmp_path / "out.onnx", providers=["CPUExecutionProvider"], batch_size=3)  # batch > 1
    chips = np.random.default_rng(1).integers(0, 256, (7, S, S, 3), dtype=np.uint8)
    ours = embedder.embed(chips)
    x = chips[..., ::-1] if rgb else chips
    raw = ((x.astype(np.float32).transpose(0, 3, 1, 2) - mean) / std).reshape(7, -1) @ W
    np.testing.assert_allclose(ours, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=atol)
    np.testing.assert_allclose(reference_embeddings(source, chips, rgb, mean, std), ours, atol=atol)
    stored = {i.name: i.data_type for i in onnx.load(str(tmp_path / "out.onnx")).graph.initializer}
    assert stored.get("w__fp16" if fp16 else "w") == (TensorProto.FLOAT16 if fp16 else TensorProto.FLOAT)


def test_two_data_inputs_are_refused(tmp_path):
    with pytest.raises(VigilError, match="one data input"):
        wrap(third_party_model(tmp_path / "src.onnx", inputs=2), tmp_path / "out.onnx", rgb=True)


def _gemm_model(weight: np.ndarray):
    """float x [N, in] -> Gemm(transB=1) with weight [out, in] -> [N, out]: a fully connected layer."""
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)],
        "fc",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", weight.shape[1]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", weight.shape[0]])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 7
    return model


def _run(model, x):
    import onnxruntime as ort

    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize(
    "row_scales, then_fp16",
    [
        ([1.0, 1.0, 1.0], False),
        ([1.0, 1e-3, 50.0], False),  # one scale per row: a small row keeps its own precision
        ([1.0, 0.0, 2.0], False),  # an all-zero row stays zero (no division by zero)
        ([1.0, 1e-3, 50.0], True),  # fp16 storage of the rest leaves the int8 row scales float32
    ],
)
def test_matrices_to_int8_keeps_each_row_to_half_a_step(row_scales, then_fp16):
    from pipelines.recognizer.convert import INT8_SCALE_SUFFIX, matrices_to_int8, weights_to_fp16

    rng = np.random.default_rng(2)
    weight = (rng.normal(size=(3, 64)) * np.array(row_scales)[:, None]).astype(np.float32)
    model = _gemm_model(weight)
    assert matrices_to_int8(model, min_elements=100) == ["w"]
    if then_fp16:
        weights_to_fp16(model)
    onnx.checker.check_model(model)
    stored = {i.name: i.data_type for i in model.graph.initializer}
    assert stored == {"w__int8": TensorProto.INT8, f"w{INT8_SCALE_SUFFIX}": TensorProto.FLOAT}
    x = np.eye(64, dtype=np.float32)  # the output's rows are the rebuilt weight's columns
    rebuilt = _run(model, x).T
    step = np.abs(weight).max(axis=1, keepdims=True) / 127
    assert np.all(np.abs(rebuilt - weight) <= step / 2 + 1e-7)
    assert np.all(np.isfinite(rebuilt))


def test_matrices_to_int8_leaves_small_matrices():
    from pipelines.recognizer.convert import matrices_to_int8

    model = _gemm_model(np.ones((3, 64), np.float32))
    assert matrices_to_int8(model, min_elements=1000) == []  # 192 values: below the size limit
    assert {i.name for i in model.graph.initializer} == {"w"}
