"""Level 4's per-well profiles: what a screen reads per well, from real or virtual stains.

A screen store (:func:`vsgrid.data.synthetic.build_screen_store`) holds the held-out plates of a
cell type whole in its test split: every well, ``evaluation.screen.fields_per_well`` fields each,
in plate, well, field order; its train split holds control wells of the cell type's other plates.
Per well and stain, :func:`well_profiles` gives

- ``cell_count``: instances of the stain's own segmentation (dapi, fitc; cy5 has none of its own);
- ``phenotype_score``: the mean toxic probability of the well's cells, from a random forest on the
  selected features trained, as screening groups train a phenotype classifier, on real-stain
  cells of positive-control (toxic) against negative-control (non-toxic) wells of *other* plates
  (the store's train split), so that the screen plate never teaches its own answer;
- the median of each selected feature (``evaluation.screen.readouts: selected``) or of every
  measured feature (``all``).

Images are measured a block at a time and a well's cells are dropped once the well is complete,
so memory holds a block and one well, whatever the number of plates.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from vsgrid.data.store import Store, open_store
from vsgrid.errors import VsgridError
from vsgrid.evaluation.features import FeatureSet, measure_stack, worker_pool, workers_for
from vsgrid.evaluation.segment import segment_store
from vsgrid.evaluation.selection import imputed, selected_features
from vsgrid.evaluation.stacks import blocks, read_prediction, read_stack, real_stain
from vsgrid.files import read_table, write_table
from vsgrid.grid import NONTOXIC, SEGMENTED, TOXIC
from vsgrid.layout import Layout
from vsgrid.screen.plate import ScreenSettings

log = logging.getLogger(__name__)

WELL_COLUMNS = ["plate", "well", "compound", "concentration", "fields"]
# What a virtual well says of itself, not a readout: the mean OOD score of its fields.
TRUST_COLUMNS = ["ood"]
SCORES = (
    "cell_count",
    "phenotype_score",
)  # read from every cell; the other readouts are feature medians


def readouts(wells: pd.DataFrame) -> list[str]:
    """The readouts of a per-well profile: every column but the well's own description and what
    a virtual well says of itself."""
    return [c for c in wells.columns if c not in WELL_COLUMNS + TRUST_COLUMNS]


@dataclass(frozen=True)
class PhenotypeScorer:
    """A forest that gives each cell its probability of the toxic phenotype from its features."""

    forest: object
    features: tuple[str, ...]

    def __call__(self, cells: pd.DataFrame) -> np.ndarray:
        if cells.empty:
            return np.zeros(0)
        toxic = list(self.forest.classes_).index(TOXIC)
        return self.forest.predict_proba(imputed(cells[list(self.features)]))[:, toxic]


def train_scorer(
    cells: pd.DataFrame,
    target: np.ndarray,
    features: list[str],
    trees: int,
    seed: int,
    *,
    n_jobs: int = 1,
) -> PhenotypeScorer:
    """Fit the phenotype forest on real-stain cells (one row each) and their phenotypes, with
    ``n_jobs`` threads: the same forest for any ``n_jobs`` (each tree's seed is drawn from
    ``seed`` before the trees are grown), and it predicts on one so that the trees' probabilities
    are always summed in the same order (bit for bit the same scores)."""
    from sklearn.ensemble import RandomForestClassifier

    classes = set(target)
    if classes != {TOXIC, NONTOXIC}:
        raise VsgridError(
            "the phenotype score trains on cells of negative- and positive-control wells; the "
            f"screen store's control fields of the other plates gave {sorted(classes) or 'none'} "
            "(raise evaluation.screen.forest_fields)"
        )
    forest = RandomForestClassifier(
        n_estimators=trees, random_state=seed, min_samples_leaf=2, n_jobs=n_jobs
    ).fit(imputed(cells[features]), target)
    return PhenotypeScorer(forest.set_params(n_jobs=1), tuple(features))


FOREST_TARGET = "phenotype"
FOREST_SETTINGS = ("forest_trees", "forest_seed")


@dataclass(frozen=True)
class ForestTraining:
    """What a phenotype forest is trained from: real-stain cells' features (one row each, one
    column per feature, in order), their phenotypes, and the forest's trees and seed.

    Jobs pass this table rather than the forest: a results folder then holds data only (a pickled
    forest runs whatever code a planted file holds), and :meth:`fit` grows the same forest
    wherever it is called (a seeded forest is deterministic on the same data, which Parquet keeps
    bit for bit). A refit costs about 1 s at the quick size (2,600 cells, 30 trees) and 3 to 6
    core-minutes at the paper's (230,000 cells of 20 features, 200 trees; a 43 MB table, where
    the pickled forest would take about 0.9 GB), measured on the 2-core dev VM.
    """

    cells: pd.DataFrame
    target: np.ndarray
    trees: int
    seed: int

    def fit(self, *, n_jobs: int = 1) -> PhenotypeScorer:
        return train_scorer(
            self.cells, self.target, list(self.cells.columns), self.trees, self.seed, n_jobs=n_jobs
        )

    def write(self, path: str | Path) -> None:
        trees, seed = FOREST_SETTINGS
        table = self.cells.reset_index(drop=True).assign(
            **{FOREST_TARGET: self.target, trees: self.trees, seed: self.seed}
        )
        write_table(table, path)

    @classmethod
    def read(cls, path: str | Path) -> ForestTraining:
        """The table :meth:`write` wrote; anything else is a :class:`VsgridError` naming it."""
        table = read_table(path)
        missing = [c for c in (FOREST_TARGET, *FOREST_SETTINGS) if c not in table.columns]
        settings = table[[c for c in FOREST_SETTINGS if c in table.columns]].drop_duplicates()
        if missing or len(settings) != 1 or len(table.columns) == 1 + len(FOREST_SETTINGS):
            raise VsgridError(
                f"{path} is not a phenotype forest's training table (cells' features, "
                f"{FOREST_TARGET}, {', '.join(FOREST_SETTINGS)}, one forest's settings); rerun "
                "its screen-reference step"
            )
        trees, seed = (int(settings[c].iloc[0]) for c in FOREST_SETTINGS)
        cells = table.drop(columns=[FOREST_TARGET, *FOREST_SETTINGS])
        return cls(cells, table[FOREST_TARGET].to_numpy(object), trees, seed)


def well_profiles(
    images,
    masks,
    metadata: pd.DataFrame,
    features: FeatureSet,
    scorer: PhenotypeScorer,
    *,
    counts: bool,
    readouts: list[str],
    block_size: int,
    pmap=map,
) -> pd.DataFrame:
    """One row per well: :data:`WELL_COLUMNS`, ``cell_count`` (when ``counts``), ``phenotype_score``
    and the median of each of ``readouts``; streamed a block of images at a time.

    ``metadata`` has one row per image, in image order, sorted by plate and well.
    """
    # Wells numbered in image order: a well that comes back after another would get a lower number.
    well, _ = pd.factorize(metadata["plate"].astype(str) + "/" + metadata["well"].astype(str))
    if np.any(np.diff(well) < 0):
        raise VsgridError(
            "the screen's images are not grouped by well (plate, well, field order); rebuild the screen store"
        )
    first_image = np.searchsorted(well, np.arange(well.max() + 2 if len(well) else 1))
    rows, held, done = [], None, 0
    for start, stop in blocks(len(metadata), block_size):
        cells = measure_stack(
            images[start:stop], masks[start:stop], features, pmap, first_index=start
        )
        cells = cells.assign(phenotype_score=scorer(cells), well=well[cells["image"].to_numpy()])
        held = cells if held is None else pd.concat([held, cells], ignore_index=True)
        complete = (
            well[stop] if stop < len(well) else well[-1] + 1
        )  # every well below it has all its images
        by_well = dict(tuple(held[held["well"] < complete].groupby("well")))
        for w in range(done, complete):
            rows.append(
                _profile(
                    metadata.iloc[first_image[w] : first_image[w + 1]],
                    by_well.get(w, held.iloc[:0]),
                    counts,
                    readouts,
                )
            )
        held, done = held[held["well"] >= complete], complete
    return pd.DataFrame(rows)


def _profile(wells: pd.DataFrame, cells: pd.DataFrame, counts: bool, readouts: list[str]) -> dict:
    first = wells.iloc[0]
    row = {
        "plate": str(first["plate"]),
        "well": str(first["well"]),
        "compound": str(first["compound"]),
        "concentration": float(first["concentration"]),
        "fields": len(wells),
    }
    if counts:
        row["cell_count"] = float(len(cells))
    row["phenotype_score"] = float(cells["phenotype_score"].mean()) if len(cells) else np.nan
    medians = cells[readouts].median() if len(cells) else pd.Series(np.nan, index=readouts)
    return {**row, **medians.to_dict()}


# --------------------------------------------------------------------------- jobs


def screen_store(config: dict, cell_type: str) -> Store:
    return open_store(Layout.of(config).screen_store(cell_type))


def measured_features(config: dict, selected: list[str]) -> FeatureSet:
    """The features a screen measures per cell: the selected ones, or every configured one
    (``evaluation.screen.readouts: all``); each is a readout, its well median."""
    return FeatureSet.from_config(
        config["features"],
        selected if config["evaluation"]["screen"]["readouts"] == "selected" else None,
    )


def segment_forest_fields(config: dict, cell_type: str, stain: str, out: str | Path) -> int:
    """Segment the real ``stain`` (dapi, fitc) of the phenotype forest's training fields (the
    screen store's train split: control wells of plates the screen does not hold) into ``out``;
    returns the number of instances found. A GPU job's work with Cellpose, so that the forest's
    job (:func:`measure_screen_reference`) is CPU work."""
    return segment_store(config, screen_store(config, cell_type), stain, out, split="train")


def _training_cells(
    config: dict, store: Store, stain: str, features: FeatureSet, masks: str | Path
) -> tuple[pd.DataFrame, np.ndarray]:
    """Real-stain cells of the screen store's train split, measured in their ``masks`` (written by
    :func:`segment_forest_fields`; cy5: the DAPI nuclei), labelled by their well: toxic in a
    positive control, non-toxic in a negative one."""
    labels = read_stack(masks)
    if (labels.attrs.get("store_id"), labels.attrs.get("split")) != (store.store_id, "train"):
        raise VsgridError(
            f"{masks} holds masks of other fields than the phenotype forest trains on (the train "
            f"split of {store.path}); segment them again (vsgrid screen-segment)"
        )
    settings = ScreenSettings.from_config(config)
    compounds = store.split_metadata("train")["compound"].astype(str)
    positive, negative = settings.is_positive(compounds), settings.is_negative(compounds)
    if not (positive.any() and negative.any()):
        raise VsgridError(
            f"the phenotype forest trains on negative- and positive-control wells of the plates "
            f"the screen does not hold, and {store.path} has "
            f"{'no positive' if not positive.any() else 'no negative'} control field there"
        )
    images = real_stain(store, stain, split="train")
    frames = [
        measure_stack(images[start:stop], labels[start:stop], features, first_index=start)
        for start, stop in blocks(len(images), config["evaluation"]["block_images"])
    ]
    cells = pd.concat(frames, ignore_index=True)
    target = np.where(positive, TOXIC, NONTOXIC)[cells["image"].to_numpy()]
    return cells, target.astype(object)


def measure_screen_reference(
    config: dict,
    cell_type: str,
    stain: str,
    *,
    masks: str | Path,
    forest_masks: str | Path,
    ranking: str | Path,
    wells_out: str | Path,
    forest_out: str | Path,
    workers: int | None = None,
) -> pd.DataFrame:
    """The real stain of a cell type's screen, profiled per well in its real ``masks`` (cy5: the
    DAPI nuclei), with the phenotype forest trained on the cells of ``forest_masks``
    (:func:`segment_forest_fields`, of the same stain as ``masks``): writes the profiles to
    ``wells_out`` and what the forest is trained from to ``forest_out`` (:class:`ForestTraining`)."""
    store = screen_store(config, cell_type)
    selected = selected_features(
        read_table(ranking), list(FeatureSet.from_config(config["features"]).columns)
    )
    features = measured_features(config, selected)
    images, labels = real_stain(store, stain), read_stack(masks)
    if labels.shape != images.shape:
        raise VsgridError(
            f"masks {masks} have shape {labels.shape} but the screen's images have {images.shape}"
        )
    cells, target = _training_cells(config, store, stain, features, forest_masks)
    evaluation = config["evaluation"]
    training = ForestTraining(
        cells[selected], target, evaluation["forest_trees"], evaluation["seed"]
    )
    cores = workers_for(config["features"], workers)
    scorer = training.fit(n_jobs=cores)
    with worker_pool(cores) as pmap:
        wells = well_profiles(
            images,
            labels,
            store.split_metadata("test"),
            features,
            scorer,
            counts=stain in SEGMENTED,
            readouts=features.columns,
            block_size=evaluation["block_images"],
            pmap=pmap,
        )
    training.write(forest_out)
    write_table(wells, wells_out)
    log.info("wrote %s (%d wells)", wells_out, len(wells))
    return wells


def measure_screen_run(
    config: dict,
    cell_type: str,
    stain: str,
    *,
    prediction: str | Path,
    reference: str | Path,
    forest: str | Path,
    out: str | Path,
    nuclei: str | Path | None = None,
    model: str | None = None,
    workers: int | None = None,
) -> pd.DataFrame:
    """A model's virtual stain of a cell type's screen, profiled per well like the real one (the
    same features as the real stain's profiles, ``reference``, and the same phenotype forest,
    trained from ``forest``), into ``out``; in its own masks (dapi, fitc) or the real DAPI
    ``nuclei`` (cy5)."""
    store = screen_store(config, cell_type)
    pred = read_prediction(prediction, store, stain, model)
    if stain not in SEGMENTED and nuclei is None:
        raise VsgridError(
            f"{stain} is measured in the real DAPI nuclei of the screen: give their masks (--nuclei)"
        )
    masks = pred.labels if stain in SEGMENTED else read_stack(nuclei)
    if masks is None or masks.shape != pred.image.shape:
        raise VsgridError(
            f"the prediction {prediction} has no masks matching its {pred.image.shape} images"
        )
    cores = workers_for(config["features"], workers)
    scorer = ForestTraining.read(forest).fit(n_jobs=cores)
    medians = [r for r in readouts(read_table(reference)) if r not in SCORES]
    features = FeatureSet.from_config(
        config["features"], sorted(set(scorer.features) | set(medians))
    )
    metadata = store.split_metadata("test")
    with worker_pool(cores) as pmap:
        wells = well_profiles(
            pred.image,
            masks,
            metadata,
            features,
            scorer,
            counts=stain in SEGMENTED,
            readouts=medians,
            block_size=config["evaluation"]["block_images"],
            pmap=pmap,
        )
    if pred.ood is not None:
        fields = metadata.assign(
            ood=pred.ood, plate=metadata["plate"].astype(str), well=metadata["well"].astype(str)
        )
        found = fields.groupby(["plate", "well"], sort=False)["ood"].mean()
        wells["ood"] = found.reindex(pd.MultiIndex.from_frame(wells[["plate", "well"]])).to_numpy()
    write_table(wells, Path(out))
    log.info("wrote %s (%d wells)", out, len(wells))
    return wells
