"""Training a Cellpose network from scratch on ground-truth masks, for clusters without weights.

The network is Cellpose 3's own (CPnet, random initialisation) trained with Cellpose's
``train_seg`` on the gamma-corrected stain of a store's training split and its ground-truth
masks (nuclei for dapi, cells for fitc; synthetic stores have them). The result is a weights file
that ``segmentation.cellpose.models`` can name. Its F1 at IoU 0.7 against the ground truth of the
test split is reported beside the classical backend's on the same images.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from vsgrid.data.store import MASKS, open_store
from vsgrid.errors import VsgridError
from vsgrid.evaluation.metrics import instance_scores
from vsgrid.evaluation.segment import CellposeSegmenter, classical_segmenter, gamma_correct
from vsgrid.files import atomic_path, write_text
from vsgrid.grid import SEGMENTED
from vsgrid.layout import Layout

log = logging.getLogger(__name__)


def _ground_truth(store, split: str, stain: str):
    channel = store.channel_index(stain)
    mask = MASKS.index(SEGMENTED[stain])
    return store.images(split)[:, channel], store.masks(split)[:, mask].astype(np.int32)


def median_diameter(masks: np.ndarray) -> float:
    """Median equivalent diameter (px) of the labelled objects."""
    areas = np.concatenate([np.bincount(m.ravel())[1:] for m in masks])
    areas = areas[areas > 0]
    if areas.size == 0:
        raise VsgridError("the ground-truth masks hold no objects to train on")
    return float(np.median(2 * np.sqrt(areas / np.pi)))


def f1_against_truth(segment, images, truth, iou_threshold: float) -> float:
    predicted = segment(images)
    return float(
        np.mean([instance_scores(t, p, iou_threshold)["f1"] for t, p in zip(truth, predicted)])
    )


def _fit(
    net, train, val, gamma: float, out: Path, *, epochs: int, learning_rate: float, batch_size: int
) -> list[float]:
    """Cellpose's own training of ``net`` on (images, masks) pairs, its weights saved atomically
    to ``out``; returns the training losses per epoch."""
    from cellpose import train as cellpose_train

    images, truth = train
    out.parent.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.training-") as work,
        atomic_path(out) as tmp,
    ):
        weights, losses, _ = cellpose_train.train_seg(
            net,
            train_data=[gamma_correct(i, gamma) for i in images],
            train_labels=list(truth),
            test_data=[gamma_correct(i, gamma) for i in val[0]],
            test_labels=list(val[1]),
            channels=[0, 0],
            n_epochs=epochs,
            learning_rate=learning_rate,
            batch_size=batch_size,
            min_train_masks=1,
            bsize=min(224, images.shape[-1] // 16 * 16),
            save_path=work,
            model_name="cellpose",
        )
        os.replace(weights, tmp)
    return losses


def train_cellpose(
    config: dict,
    train_set: str,
    stain: str,
    out: str | Path,
    *,
    epochs: int,
    learning_rate: float,
    batch_size: int,
) -> dict:
    """Train on the store of ``train_set``, save the weights to ``out`` (atomically) and return the
    report (also ``out``.json): F1 at ``evaluation.iou_threshold`` of Cellpose and of the
    classical backend against the ground truth of the test split."""
    import torch
    from cellpose import models

    if stain not in SEGMENTED:
        raise VsgridError(
            f"--stain must be one of {', '.join(SEGMENTED)}: Cellpose segments nuclei and cells"
        )
    settings = config["segmentation"]
    store = open_store(Layout.of(config).store(train_set))
    images, truth = _ground_truth(store, "train", stain)
    diameter = median_diameter(truth)
    gamma = settings["gamma"]
    gpu = torch.cuda.is_available()
    torch.manual_seed(0)
    model = models.CellposeModel(
        gpu=gpu, pretrained_model=False, model_type=None, diam_mean=diameter
    )
    out = Path(out)
    train_losses = _fit(
        model.net,
        (images, truth),
        _ground_truth(store, "val", stain),
        gamma,
        out,
        epochs=epochs,
        learning_rate=learning_rate,
        batch_size=batch_size,
    )

    test_images, test_truth = _ground_truth(store, "test", stain)
    cellpose = CellposeSegmenter(str(out), diameter, gamma, batch_size)
    classical = classical_segmenter(settings, stain, float(store.attrs["pixel_size_um"]))
    iou_threshold = config["evaluation"]["iou_threshold"]
    report = {
        "weights": str(out),
        "store": str(store.path),
        "stain": stain,
        "epochs": epochs,
        "diameter_px": diameter,
        "final_train_loss": float(train_losses[-1]),
        "iou_threshold": iou_threshold,
        "f1_cellpose": f1_against_truth(cellpose, test_images, test_truth, iou_threshold),
        "f1_classical": f1_against_truth(classical, test_images, test_truth, iou_threshold),
        "device": "cuda" if gpu else "cpu",
    }
    write_text(json.dumps(report, indent=2) + "\n", out.with_suffix(".json"))
    return report
