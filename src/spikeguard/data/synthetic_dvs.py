"""``synthetic-dvs``: a seeded, class-balanced, learnable event data set made here (no download).

Each sample is one of scikit-learn's embedded 8x8 digits (the ``digits`` train/test split, so
the two splits share no source image), upscaled onto a ``canvas`` x ``canvas`` scene at a
random offset and moved along three small saccades (as the N-MNIST sensor was). A simulated
DVS pixel emits one event each time its log intensity moves ``threshold`` away from its last
reference level (ON for brighter, OFF for darker), with timestamps jittered inside each
motion step. Noise: uniform background events and a few hot pixels that are fixed per split
(a property of the simulated sensor).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DataError
from .events import EVENT_DTYPE
from .digits import load_digits_split

SYNTHETIC_CLASSES = [str(i) for i in range(10)]


def _positions(rng: np.random.Generator, n: int, steps: int) -> np.ndarray:
    """Per-sample (dx, dy) offsets ``[n, 3 * steps + 1, 2]`` along a closed three-saccade path."""
    amp = rng.uniform(1.5, 3.0, size=(n, 1))
    turn = rng.uniform(-0.4, 0.4, size=(n, 1))
    # a triangle: down-right, left, back up-right to the start (N-MNIST's pattern), jittered
    dirs = np.stack(
        [np.concatenate([np.cos(a), np.sin(a)], 1) for a in (np.pi / 4 + turn, np.pi + turn, -np.pi / 4 + turn)], 1
    )  # [n, 3, 2]
    verts = np.concatenate([np.zeros((n, 1, 2)), np.cumsum(amp[:, :, None] * dirs, 1)], 1)
    verts[:, 3] = 0.0  # close the loop
    f = np.arange(1, steps + 1) / steps
    path = [verts[:, :1]]
    for s in range(3):
        path.append(verts[:, s : s + 1] + f[None, :, None] * (verts[:, s + 1 : s + 2] - verts[:, s : s + 1]))
    return np.concatenate(path, 1)


def synthetic_dvs_events(
    images: np.ndarray,
    canvas: int = 32,
    seed: int = 0,
    steps: int = 6,
    threshold: tuple[float, float] = (0.2, 0.3),
    duration: int = 300_000,
    noise_rate: float = 0.01,
    hot_pixels: int = 3,
    hot_rate: float = 8.0,
) -> list[np.ndarray]:
    """Event streams of the given grayscale images ``[n, h, w]`` in [0, 1] moved along saccades.

    Args:
        images: source images (e.g. 8x8 digits).
        canvas: sensor size (square).
        seed: seed of offsets, paths, thresholds, timestamps and noise.
        steps: motion steps per saccade (3 saccades).
        threshold: range of the per-sample log-intensity contrast threshold.
        duration: recording length in microseconds.
        noise_rate: background events per pixel and polarity over the recording.
        hot_pixels, hot_rate: number of hot pixels of the sensor and their mean events each.
    """
    n = images.shape[0]
    rng = np.random.default_rng(seed)
    base = _place_sources(images, canvas, rng)
    pos = _positions(rng, n, steps)  # [n, K + 1, 2]
    thr = rng.uniform(*threshold, size=(n, 1, 1)).astype(np.float32)
    chunks = _motion_events(base, pos, thr, duration, rng)
    chunks.append(_noise_events(n, canvas, duration, noise_rate, rng))
    chunks += _hot_pixel_events(n, canvas, duration, hot_pixels, hot_rate, seed, rng)
    return _per_sample_streams(chunks, n)


def _place_sources(images: np.ndarray, canvas: int, rng: np.random.Generator) -> np.ndarray:
    """``[n, canvas, canvas]``: each image scaled up (integer factor) near the canvas centre, offset by a few pixels."""
    n, h, w = images.shape
    scale = max(1, (canvas * 2 // 3) // max(h, w))
    if max(h, w) * scale + 8 > canvas:
        raise DataError(f"canvas {canvas} is too small for {h}x{w} sources (needs >= {max(h, w) + 8})")
    src = np.kron(images, np.ones((scale, scale)))
    sh, sw = src.shape[1:]
    base = np.zeros((n, canvas, canvas), dtype=np.float32)
    off = rng.integers(-2, 3, size=(n, 2))
    for i in range(n):
        y0, x0 = (canvas - sh) // 2 + off[i, 0], (canvas - sw) // 2 + off[i, 1]
        base[i, y0 : y0 + sh, x0 : x0 + sw] = src[i]
    return base


_Chunk = tuple[np.ndarray, ...]  # (sample, t, x, y, p) of some events


def _motion_events(
    base: np.ndarray, pos: np.ndarray, thr: np.ndarray, duration: int, rng: np.random.Generator
) -> list[_Chunk]:
    """The events of the canvases moved along ``pos``: a pixel fires each time its log intensity
    has changed by its sample's contrast threshold ``thr`` since its last event."""
    n, canvas = base.shape[0], base.shape[1]
    k_steps = pos.shape[1] - 1
    img = torch.from_numpy(base)[:, None]
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    ref = None
    dt = duration // k_steps
    chunks: list[_Chunk] = []
    for j in range(k_steps + 1):
        theta[:, 0, 2] = torch.from_numpy(-2 * pos[:, j, 0] / canvas).float()
        theta[:, 1, 2] = torch.from_numpy(-2 * pos[:, j, 1] / canvas).float()
        grid = F.affine_grid(theta, list(img.shape), align_corners=False)
        frame = F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[:, 0].numpy()
        logi = np.log(0.1 + frame)
        if ref is None:
            ref = logi
            continue
        diff = logi - ref
        count = np.floor(np.abs(diff) / thr).astype(np.int64)
        ref = ref + np.sign(diff) * count * thr
        s, y, x = np.nonzero(count)
        reps = count[s, y, x]
        s, y, x = np.repeat(s, reps), np.repeat(y, reps), np.repeat(x, reps)
        p = np.repeat((diff[np.nonzero(count)] > 0).astype(np.uint8), reps)
        t = (j - 1) * dt + rng.integers(0, dt, size=len(s))
        chunks.append((s, t, x, y, p))
    return chunks


def _noise_events(n: int, canvas: int, duration: int, noise_rate: float, rng: np.random.Generator) -> _Chunk:
    """Background noise: uniform in space, time and polarity."""
    n_noise = rng.poisson(noise_rate * 2 * canvas * canvas, size=n)
    s = np.repeat(np.arange(n), n_noise)
    m = len(s)
    return (
        s,
        rng.integers(0, duration, m),
        rng.integers(0, canvas, m),
        rng.integers(0, canvas, m),
        rng.integers(0, 2, m).astype(np.uint8),
    )


def _hot_pixel_events(
    n: int, canvas: int, duration: int, hot_pixels: int, hot_rate: float, seed: int, rng: np.random.Generator
) -> list[_Chunk]:
    """Hot pixels: the same few sensor pixels (drawn from ``seed + 1``) fire in every recording of the split."""
    chunks: list[_Chunk] = []
    hot = np.random.default_rng(seed + 1).integers(0, canvas, size=(hot_pixels, 2))
    for hy, hx in hot:
        c = rng.poisson(hot_rate, size=n)
        s = np.repeat(np.arange(n), c)
        m = len(s)
        chunks.append(
            (s, rng.integers(0, duration, m), np.full(m, hx), np.full(m, hy), rng.integers(0, 2, m).astype(np.uint8))
        )
    return chunks


def _per_sample_streams(chunks: list[_Chunk], n: int) -> list[np.ndarray]:
    """The events of all chunks as one stream per sample, in time order."""
    s, t, x, y, p = (np.concatenate(a) for a in zip(*chunks, strict=True))
    order = np.lexsort((t, s))
    s, t, x, y, p = s[order], t[order], x[order], y[order], p[order]
    bounds = np.searchsorted(s, np.arange(n + 1))
    out = []
    for i in range(n):
        a, b = bounds[i], bounds[i + 1]
        ev = np.empty(b - a, dtype=EVENT_DTYPE)
        ev["t"], ev["x"], ev["y"], ev["p"] = t[a:b], x[a:b], y[a:b], p[a:b]
        out.append(ev)
    return out


def synthetic_dvs_split(split: str, n: int, seed: int = 0, canvas: int = 32) -> tuple[list[np.ndarray], np.ndarray]:
    """``n`` class-balanced event streams and labels of ``split`` (``train`` / ``test``).

    The source digits come from the matching split of the embedded ``digits`` set; each class
    gets ``n // 10`` samples (the first ``n % 10`` classes one more), drawn without
    replacement while the split has enough and with replacement (new saccades) after.
    """
    if n < 1:
        raise DataError(f"synthetic-dvs needs n >= 1 samples, got {n}")
    train, test = load_digits_split()
    src = train if split == "train" else test
    imgs, labels = src.images[:, 0].numpy(), src.labels.numpy()
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    picked = []
    for c in range(10):
        pool = np.nonzero(labels == c)[0]
        k = n // 10 + (1 if c < n % 10 else 0)
        picked.append(rng.choice(pool, size=k, replace=k > len(pool)))
    idx = rng.permutation(np.concatenate(picked))
    stream_seed = int(rng.integers(0, 2**31 - 1))
    return synthetic_dvs_events(imgs[idx], canvas=canvas, seed=stream_seed), labels[idx].astype(np.int64)
