"""Robust spreads, for every stage: a median and a median absolute deviation (MAD) on the scale of
a standard deviation, which outliers (spots, hits, edges) barely move."""

from __future__ import annotations

import numpy as np

# A normal distribution's SD is 1.4826 times its median absolute deviation.
MAD_TO_SD = 1.4826


def robust_center_scale(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median and 1.4826 x MAD along the last axis."""
    center = np.median(values, axis=-1)
    return center, MAD_TO_SD * np.median(np.abs(values - center[..., None]), axis=-1)
