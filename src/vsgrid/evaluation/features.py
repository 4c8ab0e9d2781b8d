"""CellProfiler-style per-instance features (level 3), measured with the cp_measure package.

``measure(image, masks)`` returns one row per instance and one column per feature, named as
CellProfiler names its measurements (``AreaShape_Area``, ``Intensity_MeanIntensity``,
``Texture_Contrast_3_00_256``, ``RadialDistribution_FracAtD_1of4``, ``Granularity_3``; the channel
suffix is left out because a table holds one stain). Images are scaled as CellProfiler loads
16-bit images, counts / 65535, for real and predicted stains alike, so their features compare.

Conventions (``features.conventions``). ``cellprofiler`` (default) gives what CellProfiler 4.2's
measurement modules record wherever their result is defined:

- quartiles, median and MAD of intensity by CellProfiler's rule (position n q, interpolated; MAD
  at n / 2), not numpy's (n - 1) q;
- a Haralick texture feature that cannot be computed (an object too small for the offset, or a
  single non-zero grey level after quantisation to 8 bits) is 0, as CellProfiler records it;
- only CellProfiler 4 names: ``AreaShape_FilledArea`` and ``AreaShape_PerimeterCrofton`` are
  cp_measure's own and are left out.

``cp_measure`` keeps cp_measure's defaults (numpy quantiles, NaN texture, every name).
Radial distribution centres each object on its pixel farthest from the edge; where several tie,
cp_measure takes the first in row-major order and CellProfiler whichever SciPy's unstable sort
leaves last, which depends on the SciPy version: objects with a tied centre (even widths,
rectangles) can differ from CellProfiler in their 12 RadialDistribution features, under either
convention.
"""

from __future__ import annotations

import difflib
import importlib
import logging
import os
import re
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from vsgrid.data.store import U16_MAX
from vsgrid.errors import VsgridError
from vsgrid.evaluation.metrics import check_labels
from vsgrid.evaluation.stacks import blocks, read_prediction, read_stack, real_stain, test_store
from vsgrid.files import table_appender

log = logging.getLogger(__name__)

# accelerator: auto takes numba from this many images a job: loading it and its cached kernels
# costs about 0.3 s of CPU, more than it saves on 16 fields of 128 x 128 (bench/RESULTS.md).
AUTO_NUMBA_IMAGES = 64
# The groups measured from the masks alone: any image measured in the same masks gets the same.
MASK_ONLY = frozenset({"sizeshape", "zernike", "feret"})

# The measurement groups: module and function, the CellProfiler prefix their names lack, and the
# numba implementation where there is one (same values, several times faster): cp_measure's own (to
# 1e-10), or vsgrid's granularity (bit for bit; vsgrid.evaluation.granularity says why). Radial
# distribution is always vsgrid's NumPy rewrite of cp_measure's (bit for bit, twice as fast).
_CORE, _NUMBA = "cp_measure.core.", "cp_measure.core.numba."
GROUPS = {
    "sizeshape": (_CORE + "measureobjectsizeshape", "get_sizeshape", "AreaShape_", None),
    "zernike": (_CORE + "measureobjectsizeshape", "get_zernike", "AreaShape_", None),
    "feret": (_CORE + "measureobjectsizeshape", "get_feret", "AreaShape_", _NUMBA + "_feret"),
    "intensity": (
        _CORE + "measureobjectintensity",
        "get_intensity",
        "",
        _NUMBA + "measureobjectintensity",
    ),
    "texture": (_CORE + "measuretexture", "get_texture", "Texture_", _NUMBA + "measuretexture"),
    "radial_distribution": ("vsgrid.evaluation.radial", "get_radial_distribution", "", None),
    "granularity": (
        _CORE + "measuregranularity",
        "get_granularity",
        "",
        "vsgrid.evaluation.granularity",
    ),
}
PREFIX = {group: prefix for group, (_, _, prefix, _) in GROUPS.items()}
# Where an object lies in the field, and which way it points, say nothing about the cell; left out
# as in CellProfiler-based profiling.
POSITIONAL = re.compile(r"^(AreaShape_(Center_|BoundingBoxM(in|ax)imum_|Orientation$)|Location_)")

# Groups whose highest scale or degree is an option: the option and the names' prefix before it.
_LIMITS = {
    "granularity": ("granular_spectrum_length", "Granularity_"),
    "zernike": ("zernike_numbers", "AreaShape_Zernike_"),
}

NOT_CELLPROFILER = frozenset({"AreaShape_FilledArea", "AreaShape_PerimeterCrofton"})


@cache
def _measurement(
    group: str, accelerator: str | None, conventions: str = "cellprofiler"
) -> Callable:
    """The function measuring a group, imported on first use (a job pays only for its groups)."""
    from cp_measure._sanitize import sanitize

    module, function, _, fast = GROUPS[group]
    path = fast if accelerator == "numba" and fast else module
    measure = getattr(importlib.import_module(path), function)
    if group == "intensity" and conventions == "cellprofiler":
        measure = partial(measure, legacy=True)  # CellProfiler's quantile rule
    return sanitize(measure)


def _moment_shape(masks: np.ndarray, pixels: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The AreaShape features ``get_sizeshape`` derives from image moments alone, by the same
    cp_measure primitives it calls (same values), without its regionprops pass (convex hull,
    Euler number, perimeters, radii), which costs a screen's fields more than the moments."""
    from cp_measure.primitives._moments import (
        axes_eccentricity_orientation,
        inertia_2d,
        moment_feature_dict,
        spatial_moments_2d,
    )

    raw, central, normalized, hu = spatial_moments_2d(masks)
    inertia = inertia_2d(central)
    major, minor, eccentricity, _ = axes_eccentricity_orientation(inertia)
    shape = {"MajorAxisLength": major, "MinorAxisLength": minor, "Eccentricity": eccentricity}
    return shape | moment_feature_dict(raw, central, normalized, hu, inertia)


@cache
def _moments() -> Callable:
    from cp_measure._sanitize import sanitize

    return sanitize(_moment_shape)


@cache
def moment_names() -> frozenset[str]:
    """The sizeshape features :func:`_moment_shape` gives, with their prefix."""
    return frozenset(PREFIX["sizeshape"] + name for name in _moment_shape(np.ones((3, 3), int)))


@cache
def _group_measurement(
    group: str, names: tuple[str, ...] | None, accelerator: str | None, conventions: str
) -> Callable:
    """cp_measure's function for a group of a feature set; for sizeshape where every name the set
    asks of it is a moment's, :func:`_moment_shape`. Cached: asked for every group of every image."""
    if group == "sizeshape" and names:
        if set(names) & set(feature_names((group,), conventions)) <= moment_names():
            return _moments()
    return _measurement(group, accelerator, conventions)


@contextmanager
def _quiet() -> Iterator[None]:
    """Empty bins of tiny objects give NaN, kept as NaN, with RuntimeWarnings nobody can act on;
    entered once an image rather than once a group, which a screen's thousands of fields feel."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


@cache
def feature_names(groups: tuple[str, ...], conventions: str = "cellprofiler") -> tuple[str, ...]:
    """Every feature the groups produce, in measuring order (found by measuring a tiny image),
    except the positional ones (and, by CellProfiler's conventions, names it does not have)."""
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        raise VsgridError(
            f"features.groups: unknown group(s) {', '.join(unknown)}; known: {', '.join(GROUPS)}"
        )
    yy, xx = np.mgrid[:48, :48]
    masks = ((yy - 16) ** 2 + (xx - 16) ** 2 < 64).astype(np.int32) + 2 * (
        (yy - 32) ** 2 + (xx - 30) ** 2 < 49
    )
    image = np.random.default_rng(0).random((48, 48))
    with _quiet():
        names = [PREFIX[g] + name for g in groups for name in _measurement(g, None)(masks, image)]
    left_out = NOT_CELLPROFILER if conventions == "cellprofiler" else frozenset()
    return tuple(name for name in names if not POSITIONAL.match(name) and name not in left_out)


def check_feature_names(names, groups: tuple[str, ...], conventions: str = "cellprofiler") -> None:
    """Every configured name must be one the groups produce; the error suggests close names."""
    known = feature_names(groups, conventions)
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise VsgridError(
                f"features.names: {name!r} is not a feature of groups {', '.join(groups)}{hint}"
            )


@dataclass(frozen=True)
class FeatureSet:
    """Which features to measure and how: the groups, optionally an explicit list of names (only
    the groups that produce them are measured), and cp_measure's accelerator."""

    groups: tuple[str, ...] = tuple(GROUPS)
    names: tuple[str, ...] | None = None
    accelerator: str | None = "numba"
    conventions: str = "cellprofiler"

    @classmethod
    def of(
        cls,
        groups=tuple(GROUPS),
        names=None,
        accelerator: str | None = "numba",
        conventions: str = "cellprofiler",
    ) -> FeatureSet:
        """The features ``names`` (all of ``groups`` when None), measuring only the groups that produce them."""
        names = tuple(names) if names else None
        if names:
            groups = tuple(g for g in groups if set(names) & set(feature_names((g,), conventions)))
        return cls(tuple(groups), names, accelerator, conventions)

    @classmethod
    def from_config(cls, features: dict, names=None, *, images: int | None = None) -> FeatureSet:
        """The ``features`` section; ``names`` (the selected features of a ranking, say) override
        its own. ``images``: how many the job measures, which ``accelerator: auto`` decides on."""
        names = names if names is not None else features["names"]
        groups, conventions = tuple(features["groups"]), features["conventions"]
        if names:
            check_feature_names(names, groups, conventions)
        accelerator = features["accelerator"]
        if accelerator == "auto":
            accelerator = "numba" if images is None or images >= AUTO_NUMBA_IMAGES else "none"
        return cls.of(groups, names, None if accelerator == "none" else accelerator, conventions)

    def reading_pixels(self) -> FeatureSet | None:
        """This set without its :data:`MASK_ONLY` features: what differs between two images
        measured in the same masks (None when nothing does)."""
        groups = tuple(g for g in self.groups if g not in MASK_ONLY)
        names = None
        if self.names:
            kept = set(feature_names(groups, self.conventions))
            names = tuple(n for n in self.names if n in kept)
            if not names:
                return None
        return FeatureSet.of(groups, names, self.accelerator, self.conventions) if groups else None

    def _options(self, group: str) -> dict:
        """Granularity computes its spectrum scale by scale, and Zernike moments degree by degree,
        each independently of the higher ones: stop at the largest asked for."""
        option, prefix = _LIMITS.get(group, (None, None))
        if option is None or not self.names:
            return {}
        asked = [
            int(n.removeprefix(prefix).split("_")[0]) for n in self.names if n.startswith(prefix)
        ]
        return {option: max(asked)} if asked else {}

    @property
    def columns(self) -> list[str]:
        return (
            list(self.names) if self.names else list(feature_names(self.groups, self.conventions))
        )

    def measure(self, image: np.ndarray, masks: np.ndarray) -> pd.DataFrame:
        """Per-instance features of one 2-D image inside its label image: a ``label`` column and
        one column per feature; an image without instances gives an empty frame with those columns."""
        return pd.DataFrame(self._values(image, masks))

    def _values(self, image: np.ndarray, masks: np.ndarray) -> dict[str, np.ndarray]:
        """:meth:`measure`'s columns as arrays: a stack's images are joined once, not a frame each."""
        columns = self.columns
        check_labels(masks, "masks")
        if image.shape != masks.shape:
            raise VsgridError(f"image has shape {image.shape} but its masks have {masks.shape}")
        labels = np.unique(masks[masks > 0])
        if len(labels) == 0:
            return {"label": np.zeros(0, np.int64), **{c: np.zeros(0) for c in columns}}
        scaled, masks = image.astype(np.float64) / U16_MAX, masks.astype(np.int32)
        values = {}
        with _quiet():
            for group in self.groups:
                measure = _group_measurement(group, self.names, self.accelerator, self.conventions)
                raw = measure(masks, scaled, **self._options(group))
                values |= {PREFIX[group] + name: array for name, array in raw.items()}
        found = {c: np.asarray(values[c], dtype=np.float64) for c in columns}
        if self.conventions == "cellprofiler":  # CellProfiler records 0 where Haralick is undefined
            for c in columns:
                if c.startswith(PREFIX["texture"]):
                    found[c] = np.nan_to_num(found[c], nan=0.0)
        return {"label": labels.astype(np.int64), **found}


def measure(
    image: np.ndarray,
    masks: np.ndarray,
    groups=tuple(GROUPS),
    names=None,
    accelerator: str | None = "numba",
    conventions: str = "cellprofiler",
) -> pd.DataFrame:
    """:meth:`FeatureSet.measure` for one image."""
    return FeatureSet.of(groups, names, accelerator, conventions).measure(image, masks)


def _measure_image(job: tuple[int, np.ndarray, np.ndarray, FeatureSet]) -> dict[str, np.ndarray]:
    index, image, masks, features = job
    values = features._values(image, masks)
    return {"image": np.full(len(values["label"]), index, np.int64), **values}


@contextmanager
def worker_pool(workers: int) -> Iterator[Callable]:
    """A ``map`` over ``workers`` processes of one BLAS thread each, which keep their imports and
    compiled kernels from block to block; or the builtin map for one worker."""
    if workers <= 1:
        yield map
        return
    with ProcessPoolExecutor(workers, initializer=threadpool_limits, initargs=(1,)) as pool:
        yield partial(pool.map, chunksize=1)


def measure_stack(
    images, masks, features: FeatureSet, pmap: Callable = map, first_index: int = 0
) -> pd.DataFrame:
    """Features of a stack of images (N, H, W) in their masks, one row per (image, label);
    images are numbered from ``first_index``."""
    jobs = ((first_index + i, images[i], masks[i], features) for i in range(len(images)))
    found = list(pmap(_measure_image, jobs))
    if not found:
        found = [
            _measure_image((first_index, np.zeros((1, 1)), np.zeros((1, 1), np.int32), features))
        ]
    return pd.DataFrame({c: np.concatenate([f[c] for f in found]) for c in found[0]})


def workers_for(settings: dict, workers: int | None = None) -> int:
    """Feature processes: ``workers`` if given, else ``features.workers``, 0 meaning every core this job may use."""
    return workers or settings["workers"] or len(os.sched_getaffinity(0))


def measure_test_set(
    config: dict,
    test_set: str,
    stain: str,
    masks: str | Path,
    out: str | Path,
    *,
    prediction=None,
    workers=None,
    progress: bool = True,
) -> int:
    """Features of every instance of a test set's real stain (or of a prediction of it) inside the
    label stack ``masks``, streamed block by block into the Parquet table ``out`` (one row group
    per block). Returns the number of instances."""
    from tqdm import tqdm

    settings = config["features"]
    store = test_store(config, test_set)
    images = (
        read_prediction(prediction, store, stain).image if prediction else real_stain(store, stain)
    )
    features = FeatureSet.from_config(settings, images=len(images))
    labels = read_stack(masks)
    if labels.shape != images.shape:
        raise VsgridError(
            f"masks {masks} have shape {labels.shape} but the images have {images.shape}"
        )
    found = 0
    with worker_pool(workers_for(settings, workers)) as pmap, table_appender(out) as append:
        for start, stop in tqdm(
            blocks(len(images), config["evaluation"]["block_images"]),
            desc=f"features {stain}",
            disable=not progress,
            unit="block",
        ):
            table = measure_stack(
                images[start:stop], labels[start:stop], features, pmap, first_index=start
            )
            append(table)
            found += len(table)
    log.info("wrote %s (%d instances x %d features)", out, found, len(features.columns))
    return found
