"""A model's predictions of its test sets, each with its own masks: a model's GPU job.

The generator is loaded once and predicts every test set the grid runs the model on; for the
segmented stains (dapi, fitc) the segmentation backend then segments each prediction in the same
job, on the same GPU, where Cellpose is resident too. What the evaluation does with them after
is CPU work. Each prediction is a group ``<out>/<test set>.zarr`` (see
:mod:`vsgrid.evaluation.stacks`) written atomically, with each field's OOD score against the
model's training fields and, for a test set (not a screen), each pixel's spread over test-time
augmentation (``infer.tta``, with its first passes: ``infer.feature_samples``) and over MC
dropout (``infer.mc_dropout``),
:mod:`vsgrid.model.uncertainty`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import zarr

from vsgrid.data.store import open_store
from vsgrid.evaluation.segment import segment_into, segmenter
from vsgrid.evaluation.stacks import create_labels
from vsgrid.files import atomic_path
from vsgrid.grid import SEGMENTED
from vsgrid.layout import Layout, prediction_path
from vsgrid.model.infer import Predictor

log = logging.getLogger(__name__)


def predict(
    config: dict,
    model_dir: str | Path,
    names: list[str],
    out_dir: str | Path,
    *,
    screens: bool = False,
    batch_size: int | None = None,
    progress: bool = True,
) -> list[Path]:
    """Predict (and, for segmented stains, segment) each test set, or with ``screens`` each cell
    type's screen, into ``<out_dir>/<name>.zarr``."""
    layout = Layout.of(config)
    store = layout.screen_store if screens else layout.store
    return predict_stores(
        config,
        model_dir,
        {name: store(name) for name in names},
        out_dir,
        tta=config["infer"]["tta"] and not screens,
        mc_dropout=0 if screens else config["infer"]["mc_dropout"],
        samples=0 if screens else config["infer"]["feature_samples"],
        batch_size=batch_size,
        progress=progress,
    )


def predict_stores(
    config: dict,
    model_dir: str | Path,
    stores: dict[str, Path],
    out_dir: str | Path,
    *,
    tta: bool,
    mc_dropout: int,
    samples: int = 0,
    batch_size: int | None = None,
    progress: bool = True,
) -> list[Path]:
    """Predict the test split of each store (name -> path) into ``<out_dir>/<name>.zarr``, with
    the TTA spread when ``tta`` (and its first ``samples`` passes) and the spread over
    ``mc_dropout`` dropout passes when any."""
    predictor = Predictor(model_dir, config["device"], config["network"])
    batch_size = batch_size or config["infer"]["batch_size"]
    reference = predictor.ood_reference(
        open_store(Layout.of(config).store(predictor.saved["train_set"])),
        train_fields=config["infer"]["ood_train_fields"],
        batch_size=batch_size,
    )
    written, segmenters = [], {}  # Cellpose loads once per pixel size, normally once
    for name, path in stores.items():
        store = open_store(path)
        out = prediction_path(out_dir, name)
        with atomic_path(out) as tmp:
            group = zarr.open_group(tmp, mode="w", zarr_format=3)
            image = predictor.predict_test_set(
                store,
                group,
                batch_size,
                progress,
                tta=tta,
                mc_dropout=mc_dropout,
                reference=reference,
                samples=samples,
            )
            if predictor.stain in SEGMENTED:
                pixel_size = float(store.attrs["pixel_size_um"])
                if pixel_size not in segmenters:
                    segmenters[pixel_size] = segmenter(
                        config["segmentation"],
                        predictor.stain,
                        pixel_size,
                        images=sum(open_store(p).images("test").shape[0] for p in stores.values()),
                    )
                segment = segmenters[pixel_size]
                labels = create_labels(group, image.shape, name="labels")
                found = segment_into(segment, image, labels, config["evaluation"]["block_images"])
                log.info("%s: %d instances in the prediction", name, found)
        log.info("wrote %s (%d images)", out, image.shape[0])
        written.append(out)
    return written
