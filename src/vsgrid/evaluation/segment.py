"""Instance segmentation of real and virtual stains: Cellpose (paper) or a classical pipeline.

Both backends take a stack of uint16 images (N, H, W) and return int32 label images. Real-stain
masks are computed once per (test set, stain) and reused by every run on that test set; Cy5 is
not segmented: it is measured inside the nuclei of the real DAPI (:data:`vsgrid.grid.SEGMENTED`).

Both backends see images gamma-corrected with gamma 0.3 (the paper's choice for Cellpose), i.e.
(counts / 65535) ** 0.3. Compute nodes without internet need the weights on disk: a model file
path, built-in weights under ``CELLPOSE_LOCAL_MODELS_PATH``, or a network trained from scratch on
ground-truth masks with ``vsgrid train-cellpose``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.filters import threshold_otsu
from skimage.measure import label
from skimage.morphology import remove_small_objects
from skimage.segmentation import relabel_sequential, watershed

from vsgrid.data.store import U16_MAX, Store
from vsgrid.errors import VsgridError
from vsgrid.evaluation.stacks import blocks, create_labels, real_stain, test_store
from vsgrid.files import atomic_path, read_weights
from vsgrid.grid import SEGMENTED
from vsgrid.stats import robust_center_scale

log = logging.getLogger(__name__)


def gamma_correct(image: np.ndarray, gamma: float) -> np.ndarray:
    """uint16 counts -> float32 in [0, 1], raised to ``gamma`` (< 1 brightens dim objects)."""
    return (np.clip(image.astype(np.float32) / U16_MAX, 0.0, 1.0) ** gamma).astype(np.float32)


# --------------------------------------------------------------------------- classical


# A job segmenting this many images or more finds its watershed seeds with numba
# (vsgrid.evaluation.peaks): loading numba and the cached kernels costs about 0.4 s of CPU, which
# 1.7 ms saved per 128 x 128 field repays from about 250 fields. Both give the same seeds.
NUMBA_SEEDS_IMAGES = 256


def classical_labels(
    image: np.ndarray,
    diameter_px: float,
    sigma_px: float = 1.0,
    min_area_px: int = 10,
    *,
    numba: bool = False,
) -> np.ndarray:
    """Smooth, Otsu threshold, drop specks under ``min_area_px``, split touching objects by a
    distance-transform watershed whose seeds are scikit-image's ``peak_local_max`` per component
    (or the same coordinates from numba, ``numba``)."""
    smooth = ndi.gaussian_filter(image.astype(np.float32), sigma_px)
    if smooth.max() <= smooth.min():
        return np.zeros(image.shape, np.int32)
    foreground = remove_small_objects(smooth > threshold_otsu(smooth), max_size=min_area_px)
    if not foreground.any():
        return np.zeros(image.shape, np.int32)
    distance = ndi.distance_transform_edt(foreground)
    components, spacing = label(foreground), max(1, int(0.35 * diameter_px))
    if numba:
        from vsgrid.evaluation.peaks import component_peaks

        peaks = component_peaks(distance, components, spacing)
    else:
        peaks = peak_local_max(
            distance, min_distance=spacing, labels=components, exclude_border=False
        )
    markers = np.zeros(image.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return watershed(-distance, markers, mask=foreground).astype(np.int32)


def noise_sd(image: np.ndarray) -> float:
    """Robust SD of an image's pixel noise: 1.4826 x MAD of the differences of horizontal
    neighbours (which cancel smooth structure), over sqrt(2)."""
    differences = np.diff(image.astype(np.float64), axis=1).ravel()
    return float(robust_center_scale(differences)[1] / np.sqrt(2))


def drop_faint(labels: np.ndarray, counts: np.ndarray, floor_sd: float) -> np.ndarray:
    """Labels without the objects whose mean raw count lies within ``floor_sd`` noise SDs of the
    background (the 5th percentile of the counts), renumbered 1..n.

    Otsu always splits an image in two: a field without cells comes back as hundreds of objects of
    background noise. On raw counts the floor sits a few counts above the background, far below
    any stained object, even the dim fragments of dying cells (their mean is thousands of counts
    above it); in gamma-corrected images the noise is stretched and such a floor cut into them.
    """
    n = int(labels.max())
    if n == 0:
        return labels
    floor = np.percentile(counts, 5) + floor_sd * noise_sd(counts)
    keep = np.concatenate(
        [[False], ndi.mean(counts.astype(np.float64), labels, index=np.arange(1, n + 1)) > floor]
    )
    return relabel_sequential(np.where(keep[labels], labels, 0))[0].astype(np.int32)


class ClassicalSegmenter:
    """The scikit-image backend, for quick configs: fast, no weights, no GPU.

    It sees the same gamma-corrected images as Cellpose: the threshold then follows the dim
    edges of objects instead of cutting through them (F1 on synthetic nuclei 0.64 -> 0.93); objects
    no brighter than the background noise are then dropped on the raw counts (:func:`drop_faint`).
    """

    def __init__(
        self,
        diameter_px: float,
        sigma_px: float,
        min_area_px: int,
        gamma: float,
        floor_sd: float,
        numba: bool = False,
    ):
        self.diameter_px, self.sigma_px, self.min_area_px = diameter_px, sigma_px, min_area_px
        self.gamma, self.floor_sd, self.numba = gamma, floor_sd, numba

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return np.stack(
            [
                drop_faint(
                    classical_labels(
                        gamma_correct(image, self.gamma),
                        self.diameter_px,
                        self.sigma_px,
                        self.min_area_px,
                        numba=self.numba,
                    ),
                    image,
                    self.floor_sd,
                )
                for image in images
            ]
        )


# --------------------------------------------------------------------------- cellpose


def _builtin_weights_file(name: str) -> Path:
    from cellpose import models

    basename = f"{name}torch_0" if name in ("cyto", "cyto2", "nuclei") else name
    return Path(models.MODEL_DIR) / basename


def load_cellpose(model: str, gpu: bool):
    """A CellposeModel from a weights file or a built-in name whose weights are already on disk.

    Never downloads: on an offline node a missing file is an error that says how to get it.
    """
    from cellpose import models

    path = Path(model).expanduser()
    if path.is_file():
        read_weights(path, "Cellpose model", "a Cellpose model")  # refused here, not in Cellpose
        return models.CellposeModel(gpu=gpu, pretrained_model=str(path))
    if model in models.MODEL_NAMES:
        weights = _builtin_weights_file(model)
        if not weights.is_file():
            raise VsgridError(
                f"Cellpose weights for {model!r} are not at {weights}. On a machine with internet run "
                f"`python -c \"from cellpose import models; models.CellposeModel(model_type='{model}')\"`, copy "
                f"~/.cellpose/models to the cluster and set CELLPOSE_LOCAL_MODELS_PATH to that folder "
                f"(now {os.environ.get('CELLPOSE_LOCAL_MODELS_PATH', 'unset')}); or train weights from scratch "
                "with `vsgrid train-cellpose` and give the file's path as the model"
            )
        return models.CellposeModel(gpu=gpu, model_type=model)
    raise VsgridError(
        f"Cellpose model {model!r} is neither an existing file nor a built-in model name "
        f"({', '.join(models.MODEL_NAMES)})"
    )


class CellposeSegmenter:
    """Cellpose 3 on gamma-corrected images, one channel, on the GPU when there is one."""

    def __init__(self, model: str, diameter_px: float | None, gamma: float, batch_size: int):
        import torch

        gpu = torch.cuda.is_available()
        self.model = load_cellpose(model, gpu=gpu)
        self.diameter_px, self.gamma, self.batch_size = diameter_px, gamma, batch_size
        log.info(
            "Cellpose %s on %s", model, f"GPU {torch.cuda.get_device_name()}" if gpu else "the CPU"
        )

    def __call__(self, images: np.ndarray) -> np.ndarray:
        prepared = [gamma_correct(image, self.gamma) for image in images]
        masks, _, _ = self.model.eval(
            prepared,
            channels=[0, 0],
            diameter=self.diameter_px,
            batch_size=self.batch_size,
            progress=False,
        )
        return np.stack([np.asarray(m, dtype=np.int32) for m in masks])


def classical_segmenter(
    settings: dict, stain: str, pixel_size_um: float, *, images: int | None = None
) -> ClassicalSegmenter:
    """The classical backend for a stain; ``images``: how many the job segments, which decides
    how it finds its seeds (:data:`NUMBA_SEEDS_IMAGES`)."""
    classical = settings["classical"]
    diameter_px = settings["diameter_um"][stain] / pixel_size_um
    min_area_px = int(classical["min_area_fraction"] * np.pi / 4 * diameter_px**2)
    return ClassicalSegmenter(
        diameter_px,
        classical["sigma_um"] / pixel_size_um,
        min_area_px,
        settings["gamma"],
        classical["noise_floor_sd"],
        numba=images is not None and images >= NUMBA_SEEDS_IMAGES,
    )


def segmenter(settings: dict, stain: str, pixel_size_um: float, *, images: int | None = None):
    """The configured backend for a stain (``segmentation`` section of the config), for a job
    that segments ``images`` images (when known)."""
    if stain not in SEGMENTED:
        raise VsgridError(
            f"stain {stain!r} is not segmented (only {', '.join(SEGMENTED)}); cy5 is measured in the DAPI nuclei"
        )
    if settings["backend"] == "classical":
        return classical_segmenter(settings, stain, pixel_size_um, images=images)
    cellpose = settings["cellpose"]
    return CellposeSegmenter(
        cellpose["models"][stain],
        settings["diameter_um"][stain] / pixel_size_um,
        settings["gamma"],
        cellpose["batch_size"],
    )


def segment_into(segment, images, labels, block_size: int) -> int:
    """Segment ``images`` (a stack read on demand) into the label array ``labels``, block by block;
    returns the number of instances found."""
    found = 0
    for start, stop in blocks(images.shape[0], block_size):
        block = segment(images[start:stop])
        labels[start:stop] = block
        found += int(sum(len(np.unique(m)) - 1 for m in block))
    return found


def segment_test_set(config: dict, test_set: str, stain: str, out: str | Path) -> int:
    """Segment the real stain of a test set into a label stack at ``out``, a block at a time;
    returns the number of instances found."""
    return segment_store(config, test_store(config, test_set), stain, out)


def segment_store(
    config: dict, store: Store, stain: str, out: str | Path, *, split: str = "test"
) -> int:
    """Segment the real stain of a store's test split (a test set's or a screen's), or of another
    ``split``, into ``out``."""
    images = real_stain(store, stain, split=split)
    segment = segmenter(
        config["segmentation"], stain, float(store.attrs["pixel_size_um"]), images=len(images)
    )
    attrs = {
        "stain": stain,
        "test_set": store.attrs["data_set"],
        "source": "real",
        "backend": config["segmentation"]["backend"],
        "store_id": store.store_id,
        "split": split,
    }
    with atomic_path(Path(out)) as tmp:
        found = segment_into(
            segment,
            images,
            create_labels(tmp, images.shape, attrs),
            config["evaluation"]["block_images"],
        )
    log.info("wrote %s (%d images, %d instances)", out, len(images), found)
    return found
