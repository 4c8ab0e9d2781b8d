"""CellProfiler-style per-instance features (level 3), measured with the cp_measure package.

``measure(image, masks)`` returns one row per instance and one column per feature, named as
CellProfiler names its measurements (``AreaShape_Area``, ``Intensity_MeanIntensity``,
``Texture_Contrast_3_00_256``, ``RadialDistribution_FracAtD_1of4``, ``Granularity_3``; the channel
suffix is left out because a table holds one stain). Images are scaled as CellProfiler loads
16-bit images, counts / 65535, for real and virtual stains alike, so their features compare.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import warnings
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from cp_measure.bulk import get_core_measurements
from threadpoolctl import threadpool_limits

from vsgrid.errors import VsgridError
from vsgrid.evaluation.metrics import check_labels
from vsgrid.evaluation.stacks import read_prediction, read_stack, real_stain, test_store
from vsgrid.files import write_table

log = logging.getLogger(__name__)

# cp_measure's measurement groups and the CellProfiler module prefix their names lack.
PREFIX = {
    "sizeshape": "AreaShape_",
    "zernike": "AreaShape_",
    "feret": "AreaShape_",
    "intensity": "",
    "texture": "Texture_",
    "radial_distribution": "",
    "granularity": "",
}
U16_MAX = 65535.0
# Where an object lies in the field, and which way it points, say nothing about the cell; left out
# as in CellProfiler-based profiling.
POSITIONAL = re.compile(r"^(AreaShape_(Center_|BoundingBoxM(in|ax)imum_|Orientation$)|Location_)")


def _raw(group: str, image: np.ndarray, masks: np.ndarray) -> dict[str, np.ndarray]:
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # empty bins of tiny objects give NaN, kept as NaN
        return get_core_measurements()[group](masks, image)


@lru_cache(maxsize=None)
def feature_names(groups: tuple[str, ...]) -> tuple[str, ...]:
    """Every feature the groups produce, in measuring order (found by measuring a tiny image),
    except the positional ones."""
    unknown = [g for g in groups if g not in PREFIX]
    if unknown:
        raise VsgridError(f"features.groups: unknown group(s) {', '.join(unknown)}; known: {', '.join(PREFIX)}")
    yy, xx = np.mgrid[:48, :48]
    masks = ((yy - 16) ** 2 + (xx - 16) ** 2 < 64).astype(np.int32) + 2 * ((yy - 32) ** 2 + (xx - 30) ** 2 < 49)
    image = np.random.default_rng(0).random((48, 48))
    names = (PREFIX[g] + name for g in groups for name in _raw(g, image, masks))
    return tuple(name for name in names if not POSITIONAL.match(name))


def check_feature_names(names, groups: tuple[str, ...]) -> None:
    """Every configured name must be one the groups produce; the error suggests close names."""
    known = feature_names(groups)
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise VsgridError(f"features.names: {name!r} is not a feature of groups {', '.join(groups)}{hint}")


def measure(image: np.ndarray, masks: np.ndarray, groups=tuple(PREFIX), names=None) -> pd.DataFrame:
    """Per-instance features of one 2-D image inside its label image.

    Returns a frame with a ``label`` column and one column per feature (``names``, or every
    feature of ``groups``); an image without instances gives an empty frame with those columns.
    """
    groups = tuple(groups)
    columns = list(names) if names else list(feature_names(groups))
    check_labels(masks, "masks")
    if image.shape != masks.shape:
        raise VsgridError(f"image has shape {image.shape} but its masks have {masks.shape}")
    labels = np.unique(masks[masks > 0])
    if len(labels) == 0:
        return pd.DataFrame({"label": np.zeros(0, np.int64), **{c: np.zeros(0) for c in columns}})
    scaled = image.astype(np.float64) / U16_MAX
    wanted = set(columns)
    values = {}
    for group in groups:
        if not any(c in wanted for c in feature_names((group,))):
            continue
        for name, array in _raw(group, scaled, masks.astype(np.int32)).items():
            values[PREFIX[group] + name] = np.asarray(array, dtype=np.float64)
    return pd.DataFrame({"label": labels.astype(np.int64), **{c: values[c] for c in columns}})


def _measure_one(args):
    index, image, masks, groups, names = args
    return measure(image, masks, groups, names).assign(image=index)


def measure_stack(images: np.ndarray, masks: np.ndarray, groups=tuple(PREFIX), names=None, workers: int = 1, progress=None) -> pd.DataFrame:
    """Features of a stack of images (N, H, W) in their masks, one row per (image, label).

    ``workers`` > 1 spreads the images over processes; ``progress`` wraps the result iterator
    (a tqdm, say).
    """
    jobs = ((i, images[i], masks[i], tuple(groups), names) for i in range(len(images)))
    if workers > 1:
        with ProcessPoolExecutor(workers, initializer=threadpool_limits, initargs=(1,)) as pool:  # one core per process
            frames = list((progress or iter)(pool.map(_measure_one, jobs)))
    else:
        frames = list((progress or iter)(map(_measure_one, jobs)))
    table = pd.concat(frames, ignore_index=True) if frames else measure(np.zeros((1, 1)), np.zeros((1, 1), int), groups, names).assign(image=0)
    return table[["image", "label", *[c for c in table.columns if c not in ("image", "label")]]]


def workers_for(settings: dict, workers: int | None = None) -> int:
    """Feature processes: ``workers`` if given, else ``features.workers``, 0 meaning every core this job may use."""
    return workers or settings["workers"] or len(os.sched_getaffinity(0))


def measure_test_set(config: dict, test_set: str, stain: str, masks: str | Path, out: str | Path, *, prediction=None, workers=None, progress: bool = True) -> pd.DataFrame:
    """Features of every instance of a test set's real stain (or of a prediction of it) inside the
    label stack ``masks``, written to the Parquet table ``out`` and returned."""
    from tqdm import tqdm

    settings = config["features"]
    if settings["names"]:
        check_feature_names(settings["names"], tuple(settings["groups"]))
    store = test_store(config, test_set)
    images = read_prediction(prediction, store, stain)[:] if prediction else real_stain(store, stain)
    labels = read_stack(masks)
    if labels.shape != images.shape:
        raise VsgridError(f"masks {masks} have shape {labels.shape} but the images have {images.shape}")
    bar = lambda results: tqdm(results, total=images.shape[0], desc=f"features {stain}", disable=not progress, unit="image")  # noqa: E731
    table = measure_stack(images, labels[:], settings["groups"], settings["names"], workers_for(settings, workers), bar)
    write_table(table, Path(out))
    log.info("wrote %s (%d instances x %d features)", out, len(table), table.shape[1] - 2)
    return table
