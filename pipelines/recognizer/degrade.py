"""CCTV degradation augmentation for recognizer training (uint8 BGR chips in, same shape out).

A random camera model applied per sample, in the order a real camera applies it:

1. horizontal flip (landmark-symmetric template, so a flipped chip is still aligned);
2. misalignment: rotation, scale and shift of the chip (the runtime's landmarks are off on small faces);
   head turn: the chip seen as a plane rotated about its vertical axis (a homography; off by default);
   occlusion: a hand, scarf, mask or object over part of the face, mostly its lower half (off by default);
3. photometric: gamma, contrast and brightness; grayscale (night IR);
4. resolution: the chip is resized so the FACE is ``face_px`` wide (16-48 px; the face spans
   ``face_width_in_chip_px`` of the chip) with a random down-sampling filter;
5. optics and motion at that resolution: Gaussian blur, linear motion blur;
6. sensor noise: Gaussian or Poisson (shot) noise;
7. compression: JPEG at quality 10-50;
8. the runtime's up-sampling back to the chip size with a random interpolation.

With probability ``p_clean`` only the flip is applied (the model must stay good on clean faces).
Everything is numpy/cv2 on (H, W, 3) uint8 BGR; each sample gets its own generator seeded from
``(seed, index)``, so a batch's result does not depend on worker order or batch composition.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

UP_INTERPOLATIONS = ("linear", "cubic", "lanczos")
DOWN_INTERPOLATIONS = ("area", "linear", "nearest")


@dataclass(frozen=True)
class DegradeConfig:
    """Probabilities (0..1) and ranges (inclusive low, high) of the camera model. Units are in the names."""

    p_clean: float = 0.25
    p_flip: float = 0.5
    p_misalign: float = 0.8
    rotation_deg: float = 8.0
    scale_frac: float = 0.06
    shift_px: float = 4.0
    p_yaw: float = 0.0
    yaw_deg: float = 25.0  # out-of-plane turn, +/-
    p_occlude: float = 0.0
    occlude_area_frac: tuple[float, float] = (0.08, 0.30)  # of the chip
    p_occlude_lower: float = 0.7  # share of occluders centred in the lower half (hand at the chin, mask, scarf)
    p_photometric: float = 0.7
    gamma: tuple[float, float] = (0.6, 1.6)
    contrast: tuple[float, float] = (0.7, 1.15)
    brightness: tuple[float, float] = (-30.0, 30.0)
    p_gray: float = 0.2
    p_downscale: float = 0.9
    face_px: tuple[float, float] = (16.0, 48.0)
    face_width_in_chip_px: float = 100.0  # dlib's chip: 150 px with 0.25 padding each side -> face ~100 px
    p_gaussian_blur: float = 0.5
    blur_sigma_px: tuple[float, float] = (0.3, 1.2)  # at the reduced resolution
    p_motion_blur: float = 0.25
    motion_length_px: tuple[float, float] = (2.0, 5.0)  # at the reduced resolution
    p_noise: float = 0.5
    p_poisson: float = 0.4  # share of noisy samples that get shot noise instead of Gaussian
    noise_sigma: tuple[float, float] = (2.0, 10.0)  # grey levels
    poisson_peak: tuple[float, float] = (30.0, 200.0)  # photons at white (lower = noisier)
    p_jpeg: float = 0.8
    jpeg_quality: tuple[int, int] = (10, 50)

    @classmethod
    def from_dict(cls, values: dict | None) -> DegradeConfig:
        """Build from a YAML mapping; unknown keys raise ValueError naming the key."""
        values = dict(values or {})
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"degrade: unknown key(s) {unknown}")
        defaults = asdict(cls())
        kwargs: dict[str, Any] = {k: tuple(v) if isinstance(defaults[k], tuple) else v for k, v in values.items()}
        return cls(**kwargs)


class Degrader:
    """Applies :class:`DegradeConfig` to chips. ``degrade_batch`` is the entry point for training."""

    def __init__(self, config: DegradeConfig | None = None) -> None:
        import cv2

        self.config = config or DegradeConfig()
        self._cv2 = cv2
        self._up = {"linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC, "lanczos": cv2.INTER_LANCZOS4}
        self._down = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST}

    def degrade_batch(self, chips: np.ndarray, seed: int, indices: np.ndarray | None = None) -> np.ndarray:
        """Degrade (N, H, W, 3) uint8 chips; sample i uses generator ``(seed, indices[i])`` (default i)."""
        if chips.ndim != 4 or chips.shape[-1] != 3 or chips.dtype != np.uint8:
            raise ValueError(f"degrade: expected (N, H, W, 3) uint8 chips, got {chips.shape} {chips.dtype}")
        indices = np.arange(len(chips)) if indices is None else np.asarray(indices)
        out = np.empty_like(chips)
        for i, (chip, index) in enumerate(zip(chips, indices)):
            out[i] = self.degrade(chip, np.random.default_rng([int(seed) & 0xFFFFFFFF, int(index)]))
        return out

    def degrade(self, chip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One chip (H, W, 3) uint8 -> degraded copy of the same shape."""
        return self.degrade_ex(chip, rng)[0]

    def degrade_ex(self, chip: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
        """Like ``degrade``, also saying whether the chip was flipped (so a clean target can be flipped too)."""
        c = self.config
        flipped = bool(rng.random() < c.p_flip)
        img = chip[:, ::-1] if flipped else chip
        if rng.random() < c.p_clean:
            return np.ascontiguousarray(img), flipped
        return self._camera(img, rng), flipped

    def _camera(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Steps 2-8 of the module docstring on an (already flipped or not) chip."""
        c = self.config
        size = img.shape[1], img.shape[0]
        if rng.random() < c.p_misalign:
            img = self._misalign(img, rng)
        # head turn and occlusion draw from the generator only when enabled, so configs without them
        # reproduce the degraded views of runs made before they existed
        if c.p_yaw > 0 and rng.random() < c.p_yaw:
            img = self._turn(img, rng)
        if c.p_occlude > 0 and rng.random() < c.p_occlude:
            img = self._occlude(img, rng)
        img = self._light(img, rng)
        if rng.random() < c.p_downscale:
            width = max(4, int(round(size[0] * rng.uniform(*c.face_px) / c.face_width_in_chip_px)))
            height = max(4, int(round(width * size[1] / size[0])))
            down = self._down[DOWN_INTERPOLATIONS[rng.integers(len(DOWN_INTERPOLATIONS))]]
            img = self._cv2.resize(img, (width, height), interpolation=down)
        img = self._sensor(img, rng)
        if (img.shape[1], img.shape[0]) != size:
            up = self._up[UP_INTERPOLATIONS[rng.integers(len(UP_INTERPOLATIONS))]]
            img = self._cv2.resize(img, size, interpolation=up)
        return img

    def degrade_scene(
        self, image: np.ndarray, face_width_px: float, rng: np.random.Generator
    ) -> tuple[np.ndarray, float]:
        """A whole photo as a distant CCTV camera would record it: (small degraded image, scale applied).

        The photo is shrunk so its face (``face_width_px`` wide in ``image``) is ``face_px`` wide, with steps 3 and
        5-7 of the camera model (photometric, grey, blur, noise, JPEG) and **no** up-sampling: the runtime's
        detector and aligner see the small image, as they would a far-away face (``scene_views``). Flip,
        misalignment and the chip-only steps are left out: the detector's own landmarks supply the misalignment.
        """
        c = self.config
        img = self._light(image, rng)
        scale = float(rng.uniform(*c.face_px)) / max(float(face_width_px), 1.0)
        size = (max(8, int(round(image.shape[1] * scale))), max(8, int(round(image.shape[0] * scale))))
        down = self._down[DOWN_INTERPOLATIONS[rng.integers(len(DOWN_INTERPOLATIONS))]]
        img = self._sensor(self._cv2.resize(img, size, interpolation=down), rng)
        return img, size[0] / image.shape[1]

    def _light(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Step 3: photometric change and grey (IR), uint8 in and out."""
        c = self.config
        img = img.astype(np.float32)
        if rng.random() < c.p_photometric:
            img = self._photometric(img, rng)
        if rng.random() < c.p_gray:
            gray = img[..., 0] * 0.114 + img[..., 1] * 0.587 + img[..., 2] * 0.299
            img = np.repeat(gray[..., None], 3, axis=2)
        return np.clip(img, 0, 255).astype(np.uint8)

    def _sensor(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Steps 5-7 at the reduced resolution: blur, noise, JPEG."""
        c = self.config
        img = self._blur(img, rng)
        if rng.random() < c.p_noise:
            img = self._noise(img, rng)
        if rng.random() < c.p_jpeg:
            quality = int(rng.integers(c.jpeg_quality[0], c.jpeg_quality[1] + 1))
            _, buf = self._cv2.imencode(".jpg", img, [self._cv2.IMWRITE_JPEG_QUALITY, quality])
            decoded = self._cv2.imdecode(buf, self._cv2.IMREAD_COLOR)
            if decoded is None:
                raise RuntimeError("OpenCV could not decode the JPEG it encoded")
            img = decoded
        return img

    def _misalign(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        c = self.config
        h, w = img.shape[:2]
        angle = rng.uniform(-c.rotation_deg, c.rotation_deg)
        scale = 1.0 + rng.uniform(-c.scale_frac, c.scale_frac)
        m = self._cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
        m[:, 2] += rng.uniform(-c.shift_px, c.shift_px, size=2)
        return self._cv2.warpAffine(
            img, m, (w, h), flags=self._cv2.INTER_LINEAR, borderMode=self._cv2.BORDER_REFLECT101
        )

    def _turn(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Rotate the chip plane by a random yaw about its vertical axis: H = K R K^-1, focal length = chip width."""
        h, w = img.shape[:2]
        theta = np.deg2rad(rng.uniform(-self.config.yaw_deg, self.config.yaw_deg))
        k = np.array([[w, 0, w / 2], [0, w, h / 2], [0, 0, 1]], np.float64)
        r = np.array([[np.cos(theta), 0, np.sin(theta)], [0, 1, 0], [-np.sin(theta), 0, np.cos(theta)]])
        homography = k @ r @ np.linalg.inv(k)
        return self._cv2.warpPerspective(
            img, homography, (w, h), flags=self._cv2.INTER_LINEAR, borderMode=self._cv2.BORDER_REFLECT101
        )

    def _occlude(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Paint a textured ellipse or rectangle of random colour over ``occlude_area_frac`` of the chip."""
        c = self.config
        h, w = img.shape[:2]
        area = rng.uniform(*c.occlude_area_frac) * h * w
        aspect = rng.uniform(0.5, 2.0)  # width / height
        half_w, half_h = np.sqrt(area * aspect) / 2, np.sqrt(area / aspect) / 2
        low = rng.random() < c.p_occlude_lower
        cy = rng.uniform(0.6, 0.95) * h if low else rng.uniform(0.1, 0.95) * h
        cx = rng.uniform(0.2, 0.8) * w
        mask = np.zeros((h, w), np.uint8)
        centre, axes = (int(round(cx)), int(round(cy))), (max(1, int(half_w)), max(1, int(half_h)))
        if rng.random() < 0.5:
            self._cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 255, -1)
        else:
            self._cv2.rectangle(
                mask, (centre[0] - axes[0], centre[1] - axes[1]), (centre[0] + axes[0], centre[1] + axes[1]), 255, -1
            )
        colour = rng.uniform(20, 230, size=3)
        texture = rng.normal(0.0, rng.uniform(2, 20), size=(h, w, 1))
        shading = np.linspace(-1, 1, h)[:, None, None] * rng.uniform(-25, 25)
        patch = np.clip(colour[None, None, :] + texture + shading, 0, 255).astype(img.dtype)
        soft = self._cv2.GaussianBlur(mask, (0, 0), 1.0).astype(np.float32)[..., None] / 255.0
        return (img * (1 - soft) + patch * soft).astype(img.dtype)

    def _photometric(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        c = self.config
        img = 255.0 * (img / 255.0) ** rng.uniform(*c.gamma)
        return (img - 128.0) * rng.uniform(*c.contrast) + 128.0 + rng.uniform(*c.brightness)

    def _blur(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        c = self.config
        if rng.random() < c.p_gaussian_blur:
            img = self._cv2.GaussianBlur(img, (0, 0), rng.uniform(*c.blur_sigma_px))
        if rng.random() < c.p_motion_blur:
            length = rng.uniform(*c.motion_length_px)
            k = int(np.ceil(length)) | 1
            kernel = np.zeros((k, k), np.float32)
            kernel[k // 2, :] = 1.0
            rot = self._cv2.getRotationMatrix2D((k / 2 - 0.5, k / 2 - 0.5), rng.uniform(0, 180), 1.0)
            kernel = self._cv2.warpAffine(kernel, rot, (k, k))
            kernel /= max(kernel.sum(), 1e-6)
            img = self._cv2.filter2D(img, -1, kernel, borderType=self._cv2.BORDER_REFLECT101)
        return img

    def _noise(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        c = self.config
        x = img.astype(np.float32)
        if rng.random() < c.p_poisson:
            peak = rng.uniform(*c.poisson_peak)
            x = rng.poisson(x / 255.0 * peak).astype(np.float32) / peak * 255.0
        else:
            x = x + rng.normal(0.0, rng.uniform(*c.noise_sigma), size=x.shape).astype(np.float32)
        return np.clip(x + 0.5, 0, 255).astype(np.uint8)


def high_frequency_energy(chips: np.ndarray) -> np.ndarray:
    """Per-chip mean squared Laplacian of the grey image (a sharpness measure), float64 (N,)."""
    import cv2

    out = np.empty(len(chips))
    for i, chip in enumerate(chips):
        gray = cv2.cvtColor(chip, cv2.COLOR_BGR2GRAY).astype(np.float32)
        out[i] = float(np.mean(cv2.Laplacian(gray, cv2.CV_32F) ** 2))
    return out
