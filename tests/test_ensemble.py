"""vigil.ensemble: chip resampling between templates, the ensemble file, and the fused embedding's cosine."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from tests.test_embed import SIZE, tiny_left_half_model, tiny_model
from vigil.embed import OnnxEmbedder
from vigil.ensemble import ChipResampler, resample_matrix
from vigil.errors import ModelError
from vigil.models import ModelRegistry, read_members, sha256_of
from vigil.recognizer import build_embedder

# a left-right symmetric 5-point template in a 16 px chip; the members' chips are 8 px
TEMPLATE_16 = np.array([[4.5, 5.0], [10.5, 5.0], [7.5, 8.0], [5.5, 11.0], [9.5, 11.0]])


@pytest.mark.parametrize(
    "out_size, in_size, scale, shift, expected_rows",
    [
        (4, 4, 1.0, 0.0, np.eye(4)),  # identity
        (2, 4, 0.5, -0.25, [[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]]),  # exact 2x2 box: pixel centres 2u + 0.5
        (4, 2, 2.0, 0.5, [[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]]),  # enlarging: linear, edge repeated
        (2, 4, 1.0, -1.0, [[0, 1, 0, 0], [0, 0, 1, 0]]),  # pure shift: a crop
        (3, 2, 1.0, 1.0, [[1, 0], [1, 0], [0, 1]]),  # outside the input: the edge pixel (replicate border)
    ],
)
def test_resample_matrix(out_size, in_size, scale, shift, expected_rows):
    weights = resample_matrix(out_size, in_size, scale, shift)
    np.testing.assert_allclose(weights, np.asarray(expected_rows, np.float32), atol=1e-6)


def test_area_shrink_matches_opencv_inter_area():
    image = np.random.default_rng(0).integers(0, 256, (12, 12), dtype=np.uint8).astype(np.float32)
    weights = resample_matrix(4, 12, 1 / 3, -1 / 3)  # 12 -> 4, pixel centres 3u + 1
    ours = weights @ image @ weights.T
    np.testing.assert_allclose(ours, cv2.resize(image, (4, 4), interpolation=cv2.INTER_AREA), atol=1e-3)


def test_chip_resampler_cuts_the_member_chip():
    """Member template = ensemble template at half scale: the member chip is the 2x2 average of the ensemble chip."""
    member_template = (TEMPLATE_16 - 0.5) / 2
    chips = np.random.default_rng(1).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    cut = ChipResampler(TEMPLATE_16, 16, member_template, 8)(chips)
    expected = chips.astype(np.float32).reshape(3, 8, 2, 8, 2, 3).mean(axis=(2, 4))
    assert cut.dtype == np.uint8 and cut.shape == (3, 8, 8, 3)
    assert np.abs(cut.astype(np.float32) - expected).max() <= 0.5 + 1e-6


def test_chip_resampler_refuses_a_rotation():
    angle = np.deg2rad(10)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    with pytest.raises(ModelError, match="rotation"):
        ChipResampler(TEMPLATE_16, 16, TEMPLATE_16 @ rotation.T, 16)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("members: [{model: a, weight: 0.5, sha256: x}, {model: b, weight: 0.5, sha256: x}]", None),
        ("members: [{model: a, weight: 1.0, sha256: x}]", "at least 2"),
        ("members: [{model: a, weight: 0.7, sha256: x}, {model: b, weight: 0.2, sha256: x}]", "sum to 1"),
        ("members: [{model: a, weight: 0.5, sha256: x}, {model: a, weight: 0.5, sha256: x}]", "twice"),
        ("members: [{model: a, weight: 0, sha256: x}, {model: b, weight: 1, sha256: x}]", r"members\[0\]\.weight"),
        ("members: [{model: a, weight: 0.5, sha256: x}, {model: b, wieght: 0.5}]", r"members\[1\]"),
        (
            "members: [{model: a, weight: 0.5, sha256: x}, {model: b, weight: 0.5, sha256: x}]\nextra: 1",
            "exactly one key",
        ),
        ("members: [{model: a, weight: 0.5}, {model: b, weight: 0.5, sha256: x}]", r"members\[0\].*sha256"),
        ("members: [unclosed", "cannot read"),
    ],
)
def test_read_members(tmp_path, text, fragment):
    path = tmp_path / "ens.yaml"
    path.write_text(text)
    if fragment is None:
        assert [(m.model, m.weight) for m in read_members(path)] == [("a", 0.5), ("b", 0.5)]
    else:
        with pytest.raises(ModelError, match=f"{path.name}.*{fragment}"):
            read_members(path)


def _registry(tmp_path: Path, weights=(0.7, 0.3), second_member="half", pin: str | None = None) -> ModelRegistry:
    """A manifest with two tiny 8 px ONNX members and an ensemble of them over a 16 px chip."""
    root = tmp_path / "models"
    (root / "recognizer").mkdir(parents=True)
    member_template = ((TEMPLATE_16 - 0.5) / 2).round(3).tolist()
    tiny_model(root / "recognizer" / "a.onnx")
    tiny_left_half_model(root / "recognizer" / "b.onnx")
    files = {"a": "a.onnx", "half": "b.onnx", "ens": "ens.yaml"}
    second_sha = pin or (
        sha256_of(root / "recognizer" / files[second_member]) if second_member in ("a", "half") else "0" * 64
    )
    (root / "recognizer" / "ens.yaml").write_text(
        yaml.safe_dump(
            {
                "members": [
                    {"model": "a", "weight": weights[0], "sha256": sha256_of(root / "recognizer" / "a.onnx")},
                    {"model": second_member, "weight": weights[1], "sha256": second_sha},
                ]
            }
        )
    )

    def entry(file, fmt, size, template):
        return {
            "kind": "recognizer",
            "file": file,
            "sha256": sha256_of(root / file),
            "format": fmt,
            "input_size": [size, size],
            "alignment_template": template,
        }

    manifest = {
        "defaults": {"recognizer": "ens"},
        "models": {
            "a": entry("recognizer/a.onnx", "onnx", SIZE, member_template),
            "half": entry("recognizer/b.onnx", "onnx", SIZE, member_template),
            "ens": entry("recognizer/ens.yaml", "ensemble", 16, TEMPLATE_16.tolist()),
        },
    }
    (root / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    return ModelRegistry(root)


@pytest.mark.parametrize("flip_average", [False, True])
def test_ensemble_cosine_is_the_weighted_sum_of_member_cosines(tmp_path, flip_average):
    registry = _registry(tmp_path)
    spec = registry.default("recognizer")
    ensemble = build_embedder(spec, providers=["CPUExecutionProvider"], flip_average=flip_average, registry=registry)
    members = [
        OnnxEmbedder(registry.specs[name].path, providers=["CPUExecutionProvider"], flip_average=flip_average)
        for name in ("a", "half")
    ]
    chips = np.random.default_rng(2).integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    fused = ensemble.embed(chips)
    assert (
        fused.shape == (6, ensemble.dim) and ensemble.dim == sum(m.dim for m in members) and ensemble.input_size == 16
    )
    np.testing.assert_allclose(np.linalg.norm(fused, axis=1), 1.0, atol=1e-5)
    member_chips = chips.astype(np.float32).reshape(6, 8, 2, 8, 2, 3).mean(axis=(2, 4))
    member_chips = np.clip(np.rint(member_chips), 0, 255).astype(np.uint8)
    cosines = [m.embed(member_chips) @ m.embed(member_chips).T for m in members]
    np.testing.assert_allclose(fused @ fused.T, 0.7 * cosines[0] + 0.3 * cosines[1], atol=1e-4)


@pytest.mark.parametrize(
    "second_member, pin, fragment",
    [
        ("nobody", None, "no recognizer named 'nobody'"),
        ("ens", None, "must be an ONNX recognizer"),
        ("half", "f" * 64, "half is not the file this ensemble was made with"),  # member replaced under its name
    ],
)
def test_bad_member_is_one_line_model_error(tmp_path, second_member, pin, fragment):
    registry = _registry(tmp_path, second_member=second_member, pin=pin)
    with pytest.raises(ModelError, match=f"ens.yaml: members.*{fragment}"):
        build_embedder(registry.default("recognizer"), providers=["CPUExecutionProvider"], registry=registry)


def test_changed_member_file_fails_its_checksum(tmp_path):
    registry = _registry(tmp_path)
    path = registry.specs["half"].path
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(ModelError, match="b.onnx: checksum mismatch"):
        build_embedder(registry.default("recognizer"), providers=["CPUExecutionProvider"], registry=registry)


def test_a_user_onnx_borrows_the_first_members_settings_not_the_ensembles(tmp_path):
    registry = _registry(tmp_path)
    user = tiny_model(tmp_path / "user.onnx")
    spec = registry.resolve("recognizer", user)
    assert spec.format == "onnx" and spec.input_size == (SIZE, SIZE)
    np.testing.assert_allclose(spec.alignment_template, registry.specs["a"].alignment_template)


@pytest.mark.parametrize(
    "shape, dtype", [((2, 8, 8, 3), np.uint8), ((2, 16, 16, 3), np.float32), ((16, 16, 3), np.uint8)]
)
def test_ensemble_rejects_chips_of_the_wrong_size_or_type(tmp_path, shape, dtype):
    registry = _registry(tmp_path)
    ensemble = build_embedder(registry.default("recognizer"), providers=["CPUExecutionProvider"], registry=registry)
    with pytest.raises(ValueError, match=r"uint8 \[N,16,16,3\]"):
        ensemble.embed(np.zeros(shape, dtype))
