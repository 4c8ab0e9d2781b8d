"""What is in the stores: a per-(cell type, phenotype) table measured from the images.

Measured, not read back from the generator, so the same table describes ingested plates:
nuclei come from the ground-truth masks where a store has them, else from an Otsu threshold of
DAPI; DNA-damage foci are local maxima of the white top-hat of Cy5 inside nuclei (:func:`count_foci`).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.filters import threshold_otsu
from skimage.measure import label
from skimage.morphology import disk, white_tophat

from vsgrid.data.store import open_store, split_sizes
from vsgrid.stats import MAD_TO_SD

STAINS = ("dapi", "fitc", "cy5")
BLANK, SATURATED = "blank", "saturated"


def image_flag(
    image: np.ndarray, saturation: int, *, blank_range: float, saturated_fraction: float
) -> str:
    """``saturated`` when more than ``saturated_fraction`` of its pixels sit at the camera's
    ``saturation`` count, else ``blank`` when its values span fewer than ``blank_range`` counts (no
    signal: a failed acquisition), else empty. Saturation is asked first: an image saturated
    everywhere spans no counts either, but it holds too much light, not none. Such a real image
    says nothing of a prediction: scoring leaves it out (vsgrid.evaluation.scoring)."""
    if np.mean(image >= saturation) > saturated_fraction:
        return SATURATED
    if float(image.max()) - float(image.min()) < blank_range:
        return BLANK
    return ""


def count_foci(cy5: np.ndarray, nuclei: np.ndarray, pixel_size_um: float) -> int:
    """Spots in Cy5 inside nuclei: white top-hat peaks above 6 x the pixel noise.

    The noise is the robust SD of the image minus its 3 x 3 median, which spots and smooth
    pan-nuclear signal barely move.
    """
    image = cy5.astype(np.float32)
    spots = white_tophat(ndi.gaussian_filter(image, 0.5), disk(max(1, round(1.5 / pixel_size_um))))
    noise = MAD_TO_SD * np.median(np.abs(image - ndi.median_filter(image, 3))) + 1.0
    peaks = peak_local_max(
        spots,
        min_distance=max(1, round(0.8 / pixel_size_um)),
        threshold_abs=6 * noise,
        labels=(nuclei > 0).astype(int),
    )
    return len(peaks)


def otsu_nuclei(dapi: np.ndarray) -> np.ndarray:
    smooth = ndi.gaussian_filter(dapi.astype(np.float32), 1.0)
    return label(smooth > threshold_otsu(smooth))


class _Correlation:
    """Streaming Pearson correlation of two pixel populations (R^2 of a linear fit = r^2)."""

    def __init__(self):
        self.sums = np.zeros(6)

    def add(self, x: np.ndarray, y: np.ndarray):
        x, y = x.astype(np.float64).ravel(), y.astype(np.float64).ravel()
        self.sums += [x.size, x.sum(), y.sum(), (x * x).sum(), (y * y).sum(), (x * y).sum()]

    def r2(self) -> float:
        n, sx, sy, sxx, syy, sxy = self.sums
        cov, vx, vy = sxy - sx * sy / n, sxx - sx * sx / n, syy - sy * sy / n
        return float(cov * cov / (vx * vy)) if vx > 0 and vy > 0 else 0.0


def summarize_store(
    path: str | Path, split: str = "train", max_images: int = 64, quality: dict | None = None
) -> dict:
    """One row of the summary table for one store (measured on up to ``max_images`` fields of
    ``split``, or of its test split for a store that holds nothing else: a control's).

    ``quality`` holds :func:`image_flag`'s thresholds (the ``evaluation`` section of the config);
    the row counts the measured fields with a blank or saturated stain.
    """
    quality = quality or {"blank_range": 16, "saturated_fraction": 0.01}
    store = open_store(path)
    fields = split_sizes(store)
    split = split if fields[split] else "test"
    attrs, images = store.attrs, store.images(split)
    pixel_size = float(attrs["pixel_size_um"])
    picks = np.unique(
        np.linspace(0, images.shape[0] - 1, min(max_images, images.shape[0])).astype(int)
    )
    channel = {c: store.channel_index(c) for c in ("bf", *STAINS)}
    cells, areas, brightness, foci, nuclei_total, flagged = [], [], [], 0, 0, Counter()
    fits = {stain: _Correlation() for stain in STAINS}
    for i in picks:
        field = images[int(i)]
        if store.has_masks:
            nuclei, cell_labels = store.masks(split)[int(i)]
            cells.append(len(np.unique(cell_labels)) - 1)
        else:
            nuclei = otsu_nuclei(field[channel["dapi"]])
            cells.append(int(nuclei.max()))
        ids, sizes = np.unique(nuclei[nuclei > 0], return_counts=True)
        areas.extend(sizes * pixel_size**2)
        if len(ids):
            brightness.extend(ndi.mean(field[channel["dapi"]], nuclei, ids))
        foci += count_foci(field[channel["cy5"]], nuclei, pixel_size)
        nuclei_total += len(ids)
        for stain in STAINS:
            fits[stain].add(field[channel["bf"]], field[channel[stain]])
        flags = {
            image_flag(
                field[channel[s]],
                attrs["saturation"],
                blank_range=quality["blank_range"],
                saturated_fraction=quality["saturated_fraction"],
            )
            for s in STAINS
        }
        flagged.update(flags - {""})
    return {
        "data_set": attrs["data_set"],
        "cell_type": attrs["cell_type"],
        "phenotype": attrs["phenotype"],
        "cells_per_field": float(np.mean(cells)),
        "nucleus_area_um2": float(np.mean(areas)) if areas else float("nan"),
        "nucleus_dapi": float(np.mean(brightness)) if brightness else float("nan"),
        "cy5_foci_per_nucleus": foci / max(nuclei_total, 1),
        **{f"n_{s}": n for s, n in fields.items()},
        **{f"r2_bf_{stain}": fits[stain].r2() for stain in STAINS},
        "blank_fields": flagged[BLANK],
        "saturated_fields": flagged[SATURATED],
    }


def summarize(
    paths, split: str = "train", max_images: int = 64, quality: dict | None = None
) -> pd.DataFrame:
    """The summary table of several stores, one row each."""
    return pd.DataFrame([summarize_store(p, split, max_images, quality) for p in paths])


def format_summary(table: pd.DataFrame) -> str:
    """The table as a person reads it in a terminal."""
    shown = table.drop(columns=["cell_type", "phenotype"]).rename(
        columns={
            "data_set": "data set",
            "cells_per_field": "cells/field",
            "nucleus_area_um2": "nucleus um2",
            "nucleus_dapi": "nucleus DAPI",
            "cy5_foci_per_nucleus": "Cy5 foci/nucleus",
            "r2_bf_dapi": "R2 BF->DAPI",
            "r2_bf_fitc": "R2 BF->FITC",
            "r2_bf_cy5": "R2 BF->Cy5",
            "blank_fields": "blank",
            "saturated_fields": "saturated",
        }
    )
    return shown.to_string(
        index=False, float_format=lambda v: f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    )


def summary_text(paths, quality: dict | None = None) -> str:
    """The summary of the stores at ``paths``, formatted for a terminal."""
    return format_summary(summarize(paths, quality=quality))
