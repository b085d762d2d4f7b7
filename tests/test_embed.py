"""OnnxEmbedder on a tiny ONNX model with the recognizer's I/O contract (uint8 [N,S,S,3] -> float [N,D])."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from vigil.embed import OnnxEmbedder
from vigil.errors import ModelError
from vigil.onnx_session import usable_providers

SIZE, DIM = 8, 4
WEIGHTS = np.array([[1, 0, 2, 1], [0, 1, -1, 3], [1, 1, 0, -2]], np.float32)  # 3 colour means -> 4 dims


def tiny_model(path: Path, input_type: int = TensorProto.UINT8) -> Path:
    """chips [N,8,8,3] -> per-channel mean [N,3] -> @ WEIGHTS -> 'embeddings' [N,4] (not normalised on purpose)."""
    nodes = [
        helper.make_node("Cast", ["chips"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["x"], ["means"], axes=[1, 2], keepdims=0),
        helper.make_node("MatMul", ["means", "w"], ["embeddings"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("chips", input_type, ["N", SIZE, SIZE, 3])],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["N", DIM])],
        [numpy_helper.from_array(WEIGHTS, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def tiny_left_half_model(path: Path) -> Path:
    """Like tiny_model but from the LEFT half of the chip only: not mirror-invariant, so flip averaging shows."""
    nodes = [
        helper.make_node("Cast", ["chips"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["left"]),
        helper.make_node("ReduceMean", ["left"], ["means"], axes=[1, 2], keepdims=0),
        helper.make_node("MatMul", ["means", "w"], ["embeddings"]),
    ]
    consts = [
        numpy_helper.from_array(np.array(v, np.int64), n)
        for n, v in (("starts", [0]), ("ends", [SIZE // 2]), ("axes", [2]))
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_left",
        [helper.make_tensor_value_info("chips", TensorProto.UINT8, ["N", SIZE, SIZE, 3])],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["N", DIM])],
        [numpy_helper.from_array(WEIGHTS, "w"), *consts],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def expected(chips: np.ndarray) -> np.ndarray:
    raw = chips.astype(np.float32).mean(axis=(1, 2)) @ WEIGHTS
    return raw / np.linalg.norm(raw, axis=1, keepdims=True)


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    return tiny_model(tmp_path / "tiny.onnx")


def chips(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 256, size=(n, SIZE, SIZE, 3), dtype=np.uint8)


def test_reads_contract_from_model(model_path):
    embedder = OnnxEmbedder(model_path, providers=("CPUExecutionProvider",))
    assert (embedder.input_size, embedder.dim, embedder.provider) == (SIZE, DIM, "CPUExecutionProvider")


@pytest.mark.parametrize("n, batch_size", [(1, 64), (5, 2), (7, 7), (64, 16), (3, 1)])
def test_embeddings_are_unit_norm_and_batching_is_invisible(model_path, n, batch_size):
    batch = chips(n, seed=n)
    out = OnnxEmbedder(model_path, batch_size=batch_size).embed(batch)
    assert out.shape == (n, DIM) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(out, expected(batch), atol=1e-5)


def test_empty_batch(model_path):
    out = OnnxEmbedder(model_path).embed(np.zeros((0, SIZE, SIZE, 3), np.uint8))
    assert out.shape == (0, DIM) and out.dtype == np.float32


def test_unavailable_providers_fall_back_to_cpu(model_path):
    embedder = OnnxEmbedder(model_path, providers=("NoSuchExecutionProvider", "CUDAExecutionProvider"))
    assert embedder.provider == "CPUExecutionProvider"


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((2, SIZE, SIZE, 3), np.float32),
        np.zeros((2, SIZE + 1, SIZE, 3), np.uint8),
        np.zeros((SIZE, SIZE, 3), np.uint8),
    ],
)
def test_rejects_wrong_chips(model_path, bad):
    with pytest.raises(ValueError):
        OnnxEmbedder(model_path).embed(bad)


def corrupt(path: Path) -> Path:
    path.write_bytes(b"this is not an onnx file" * 10)
    return path


@pytest.mark.parametrize(
    "make",
    [
        lambda d: d / "missing.onnx",
        lambda d: corrupt(d / "corrupt.onnx"),
        lambda d: tiny_model(d / "float_input.onnx", input_type=TensorProto.FLOAT),
    ],
    ids=["missing", "corrupt", "wrong-input-type"],
)
def test_bad_model_file_is_one_line_model_error(tmp_path, make):
    path = make(tmp_path)
    with pytest.raises(ModelError) as info:
        OnnxEmbedder(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message


CUDA, TRT, CPU = "CUDAExecutionProvider", "TensorrtExecutionProvider", "CPUExecutionProvider"


@pytest.mark.parametrize(
    "wanted, available, driver, expected",
    [
        ((CUDA, CPU), (CUDA, CPU), True, [CUDA, CPU]),
        ((CUDA, CPU), (CUDA, CPU), False, [CPU]),  # onnxruntime-gpu on a machine without an NVIDIA driver
        ((TRT, CUDA, CPU), (TRT, CUDA, CPU), False, [CPU]),
        ((CUDA, CPU), (CPU,), True, [CPU]),  # CPU-only onnxruntime
        ((CUDA,), (CPU,), False, [CPU]),  # nothing usable: CPU anyway
        (
            ("OpenVINOExecutionProvider", CPU),
            ("OpenVINOExecutionProvider", CPU),
            False,
            ["OpenVINOExecutionProvider", CPU],
        ),
    ],
)
def test_usable_providers(wanted, available, driver, expected):
    assert usable_providers(wanted, available, driver) == expected


@pytest.mark.parametrize("n, batch_size", [(1, 64), (5, 2), (5, 1), (9, 4)])
def test_flip_average_is_the_normalised_sum_of_chip_and_mirror(tmp_path, n, batch_size):
    path = tiny_left_half_model(tmp_path / "left.onnx")
    batch = chips(n, seed=10 + n)
    left = _unit(batch[:, :, : SIZE // 2].astype(np.float32).mean(axis=(1, 2)) @ WEIGHTS)
    right_mirrored = _unit(batch[:, :, SIZE // 2 :].astype(np.float32).mean(axis=(1, 2)) @ WEIGHTS)
    plain = OnnxEmbedder(path, batch_size=batch_size).embed(batch)
    flipped = OnnxEmbedder(path, batch_size=batch_size, flip_average=True).embed(batch)
    np.testing.assert_allclose(plain, left, atol=1e-5)
    np.testing.assert_allclose(flipped, _unit(left + right_mirrored), atol=1e-5)
    mirrored_input = OnnxEmbedder(path, batch_size=batch_size, flip_average=True).embed(
        np.ascontiguousarray(batch[:, :, ::-1])
    )
    np.testing.assert_allclose(mirrored_input, flipped, atol=1e-5)  # mirror-invariant
    assert not np.allclose(plain, flipped, atol=1e-3)  # and it really changed the embedding
