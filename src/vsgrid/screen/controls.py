"""Level 4's controls: virtual screens made from the real stain with no model, scored as a model's.

Like task 0 for levels 1 to 3, they show on every run that level 4 can say yes and no
(``evaluation.screen.controls``; :class:`vsgrid.grid.ScreenControl` names them):

- ``oracle``: the real stain plus Gaussian camera noise (``noise_sd`` counts). It must be
  replaceable; where it is not, the screen cannot resolve at these margins and sizes;
- ``degraded``: the real stain blurred (``blur_sigma`` px): the texture and intensity profile the
  phenotype forest reads are gone, so it must not be replaceable;
- ``affine``: the oracle under a gain and an offset drawn per plate (``affine_gain``,
  ``affine_offset``), as plates stained or imaged on other days differ: what sentinel wells must
  recalibrate.

Each is written as an inference job writes a screen prediction (:mod:`vsgrid.model.infer`):
``image`` aligned with the screen store's test split, its attributes naming the control, stain,
test set and store; for a segmented stain its ``labels`` are the real stain's masks, so that a
control tests the readouts and not a segmentation (and needs no GPU), and it has no OOD score.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import zarr
from scipy import ndimage as ndi

from vsgrid import __version__, arrays
from vsgrid.data.store import as_uint16
from vsgrid.evaluation.stacks import blocks, create_labels, read_stack, real_stain
from vsgrid.files import atomic_paths
from vsgrid.grid import AFFINE, DEGRADED, ORACLE, SCREEN_CONTROLS, SEGMENTED, ScreenControl
from vsgrid.screen.wells import screen_store
from vsgrid.seeds import rng_for

log = logging.getLogger(__name__)


def _noise(settings: dict, key: tuple, first: int, shape: tuple[int, ...]) -> np.ndarray:
    """The oracle's camera noise of images ``first`` on, each image its own stream: the same
    noise whatever the block size."""
    return np.stack(
        [
            rng_for(*key, first + i).normal(0.0, settings["noise_sd"], shape[1:])
            for i in range(shape[0])
        ]
    )


def _plate_affine(settings: dict, key: tuple, plates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each image's (gain, offset): one draw per plate, the same plate always the same draw."""
    drawn = {}
    for plate in np.unique(plates):
        rng = rng_for(*key, "affine", str(plate))
        drawn[plate] = (
            rng.uniform(*settings["affine_gain"]),
            rng.uniform(*settings["affine_offset"]),
        )
    gain, offset = np.array([drawn[p] for p in plates]).T
    return gain[:, None, None], offset[:, None, None]


def control_images(
    controls, real: np.ndarray, plates: np.ndarray, first: int, settings: dict, key: tuple
) -> dict[str, np.ndarray]:
    """A block of each of ``controls``' images (B, H, W) uint16 from the real stain's, images
    ``first`` on of plates ``plates``; ``key`` seeds the draws. The affine control is the oracle's
    images under its plates' gain and offset: one noise draw serves both."""
    counts, found = real.astype(np.float64), {}
    if DEGRADED in controls:
        sigma = settings["blur_sigma"]
        found[DEGRADED] = as_uint16(ndi.gaussian_filter(counts, (0, sigma, sigma)))
    if {ORACLE, AFFINE} & set(controls):
        oracle = counts + _noise(settings, key, first, counts.shape)
        found[ORACLE] = as_uint16(oracle)
        if AFFINE in controls:
            gain, offset = _plate_affine(settings, key, plates)
            found[AFFINE] = as_uint16(oracle * gain + offset)
    return {control: found[control] for control in controls}


def write_controls(
    config: dict,
    cell_type: str,
    stain: str,
    out: dict[str, str | Path],
    *,
    masks: str | Path | None = None,
) -> list[Path]:
    """Write each control of ``out`` (control -> its prediction's path) of a cell type's screen
    and stain, atomically; a segmented stain's controls carry its real ``masks``."""
    if set(out) - set(SCREEN_CONTROLS):
        raise ValueError(f"unknown screen controls {sorted(set(out) - set(SCREEN_CONTROLS))}")
    settings = config["evaluation"]["screen"]["controls"]
    store, block = screen_store(config, cell_type), config["evaluation"]["block_images"]
    real, plates = real_stain(store, stain), store.split_metadata("test")["plate"].to_numpy()
    labels = read_stack(masks) if stain in SEGMENTED else None
    key = (config["evaluation"]["seed"], "screen control", cell_type, stain)
    with atomic_paths(list(out.values())) as tmps:
        groups = {}
        for control, tmp in zip(out, tmps):
            group = groups[control] = zarr.open_group(tmp, mode="w", zarr_format=3)
            arrays.create(
                group, real.shape, chunks=(1, *real.shape[1:]), dtype="uint16", name="image"
            )
            if labels is not None:
                create_labels(group, real.shape, name="labels")
            group.attrs.update(
                model=ScreenControl(control, stain).name,
                control=control,
                stain=stain,
                test_set=store.attrs["data_set"],
                test_store=str(store.path),
                store_id=store.store_id,
                settings=settings,
                vsgrid=__version__,
            )
        for start, stop in blocks(len(real), block):
            made = control_images(
                groups, real[start:stop], plates[start:stop], start, settings, key
            )
            for control, group in groups.items():
                group["image"][start:stop] = made[control]
                if labels is not None:
                    group["labels"][start:stop] = labels[start:stop]
    log.info("wrote %s (%d images each)", ", ".join(map(str, out.values())), len(real))
    return [Path(p) for p in out.values()]
