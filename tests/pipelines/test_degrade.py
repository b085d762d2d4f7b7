"""CCTV degradation augmentation: shape/dtype, determinism per seed, and that it really degrades."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.recognizer.degrade import DegradeConfig, Degrader, high_frequency_energy


def _chips(n: int = 12, size: int = 150) -> np.ndarray:
    """Sharp synthetic 'faces': a checkerboard of 6 px squares plus a few edges, uint8 BGR."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    board = (((yy // 6) + (xx // 6)) % 2 * 160 + 40).astype(np.uint8)
    chips = np.repeat(board[None, :, :, None], 3, axis=3).repeat(n, axis=0)
    chips[:, 40:110, 50:100] = rng.integers(0, 255, size=(n, 1, 1, 3), dtype=np.uint8)
    return chips


@pytest.mark.parametrize("size", [150, 112])
def test_shape_and_dtype_are_kept(size):
    chips = _chips(6, size)
    out = Degrader().degrade_batch(chips, seed=3)
    assert out.shape == chips.shape and out.dtype == np.uint8


@pytest.mark.parametrize("seed", [0, 7])
def test_same_seed_same_output_and_independent_of_batch(seed):
    chips = _chips()
    deg = Degrader()
    a = deg.degrade_batch(chips, seed=seed)
    b = deg.degrade_batch(chips, seed=seed)
    np.testing.assert_array_equal(a, b)
    part = deg.degrade_batch(chips[5:8], seed=seed, indices=np.arange(5, 8))
    np.testing.assert_array_equal(part, a[5:8])
    assert not np.array_equal(a, deg.degrade_batch(chips, seed=seed + 1))


def test_degradation_removes_high_frequencies():
    chips = _chips(40)
    cfg = DegradeConfig(p_clean=0.0, p_flip=0.0)
    out = Degrader(cfg).degrade_batch(chips, seed=1)
    before, after = high_frequency_energy(chips), high_frequency_energy(out)
    assert np.median(after) < 0.5 * np.median(before)


@pytest.mark.parametrize(
    "override, expect_equal",
    [
        ({"p_clean": 1.0, "p_flip": 0.0}, True),  # clean samples pass unchanged
        ({"p_clean": 0.0, "p_flip": 0.0}, False),
    ],
)
def test_clean_probability(override, expect_equal):
    chips = _chips(4)
    out = Degrader(DegradeConfig(**override)).degrade_batch(chips, seed=0)
    assert np.array_equal(out, chips) is expect_equal


def test_flip_only_mirrors():
    chips = _chips(3)
    out = Degrader(DegradeConfig(p_clean=1.0, p_flip=1.0)).degrade_batch(chips, seed=0)
    np.testing.assert_array_equal(out, chips[:, :, ::-1])


def test_grayscale_gives_equal_channels():
    cfg = DegradeConfig(p_clean=0.0, p_gray=1.0, p_jpeg=0.0, p_noise=0.0)
    out = Degrader(cfg).degrade_batch(_chips(4), seed=2)
    assert np.abs(out[..., 0].astype(int) - out[..., 2].astype(int)).max() <= 1


@pytest.mark.parametrize("bad", [{"nope": 1}, {"p_cleen": 0.1}])
def test_unknown_config_key_is_rejected(bad):
    with pytest.raises(ValueError, match="unknown key"):
        DegradeConfig.from_dict(bad)


def test_from_dict_turns_lists_into_tuples():
    cfg = DegradeConfig.from_dict({"jpeg_quality": [20, 30]})
    assert cfg.jpeg_quality == (20, 30)


NOTHING_ELSE = {
    "p_clean": 0.0,
    "p_flip": 0.0,
    "p_misalign": 0.0,
    "p_photometric": 0.0,
    "p_gray": 0.0,
    "p_downscale": 0.0,
    "p_gaussian_blur": 0.0,
    "p_motion_blur": 0.0,
    "p_noise": 0.0,
    "p_jpeg": 0.0,
}


@pytest.mark.parametrize(
    "override, changed_frac_range, lower_share_min",
    [
        ({}, (0.0, 0.0), None),  # pose and occlusion are off by default: the chip passes unchanged
        ({"p_occlude": 1.0, "occlude_area_frac": (0.1, 0.1), "p_occlude_lower": 1.0}, (0.05, 0.2), 0.8),
        ({"p_occlude": 1.0, "occlude_area_frac": (0.25, 0.3)}, (0.15, 0.4), None),
        ({"p_yaw": 1.0, "yaw_deg": 25.0}, (0.2, 1.0), None),
    ],
)
def test_head_turn_and_occlusion(override, changed_frac_range, lower_share_min):
    chips = _chips(20)
    out = Degrader(DegradeConfig(**{**NOTHING_ELSE, **override})).degrade_batch(chips, seed=2)
    changed = np.any(out != chips, axis=3)  # (N, H, W)
    frac = changed.mean(axis=(1, 2))
    assert changed_frac_range[0] <= frac.min() and frac.max() <= changed_frac_range[1]
    if lower_share_min is not None:
        lower = changed[:, changed.shape[1] // 2 :].sum() / max(1, changed.sum())
        assert lower >= lower_share_min
