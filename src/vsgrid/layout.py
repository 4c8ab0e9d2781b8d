"""Where every file of a grid lives: the one description of the data and results layout.

The Snakefile (at parse time) and the package both take their paths from :class:`Layout`, so a
path is spelled once. Standard library only, like :mod:`vsgrid.grid`.

::

    <data.dir>/<data set>.zarr                                  one store per (cell type, phenotype)
    <results.dir>/models/<model>/                               summary.json, best.pt, last.pt, log.csv, settings.json
    <results.dir>/predictions/<model>/<test set>.zarr           prediction: image, and labels for dapi/fitc
    <results.dir>/runs/<model>/<test set>/                      scores.parquet, images.parquet, ...
    <results.dir>/reference/<test set>/<stain>.masks.zarr       real-stain masks (dapi, fitc)
    <results.dir>/reference/<test set>/<stain>.features.parquet real-stain features
    <results.dir>/reference/<test set>/bf_texture.parquet       BF statistics (no-model OOD)
    <results.dir>/reference/rankings/<cell type>.<stain>.tsv    feature ranking
    <data.dir>/screen/<cell type>.zarr                          level 4: held-out plates, every well
    <results.dir>/screen/reference/<cell type>/<stain>.masks.zarr         real masks (dapi, fitc)
    <results.dir>/screen/reference/<cell type>/<stain>.forest_masks.zarr  ... of the forest's fields
    <results.dir>/screen/reference/<cell type>/<stain>.forest.parquet     phenotype forest's cells
    <results.dir>/screen/reference/<cell type>/<stain>.wells.parquet      real per-well profiles
    <results.dir>/screen/predictions/<model>/<cell type>.zarr   a model's virtual screen
    <results.dir>/screen/runs/<model>/<cell type>.wells.parquet its per-well profiles
    <results.dir>/export/<model>/<test set>/<plate>.ome.zarr    on demand: real and virtual stains, OME-Zarr HCS
    <results.dir>/tables/, figures/, logs/, benchmarks/

A screen's store is a data set of its own, ``<cell type>-screen`` (:func:`screen_data_set`).
Arguments naming a data set, model or test set take the grid's objects or their names (or a
Snakemake wildcard such as ``"{model}"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vsgrid.grid import DataSet, Model, masks_stain

# Every table and figure the workflow writes, named once: the rules declare them, the report code
# writes and reads them.
RUN_TABLES = ("scores", "images", "feature_differences", "features", "cells")  # a run's, Parquet
GRID_TABLES = (
    "runs",
    "deltas",
    "deltas_pixel",
    "deltas_instance",
    "deltas_feature",
    "tasks",
    "features",
)
TRUST_TABLE = "trust"  # what the models say of their predictions against the truth
SCREEN_TABLES = ("screen", "screen_truth", "screen_verdicts", "screen_trust")
TABLE_FORMATS = ("parquet", "csv")
OUTCOME, SCREEN_OUTCOME = "outcome.txt", "screen_outcome.txt"
# and the panels, grid.panel_runs
GRID_FIGURES = ("figure2", "figure4", "figure6a", "figure6b", "figure10a", "figure10b")
SCREEN_FIGURES = ("figure7", "figure8", "figure9", "figure11")


def _name(item: str | DataSet | Model) -> str:
    return item if isinstance(item, str) else item.name


def table_path(folder: str | Path, name: str, fmt: str = "parquet") -> Path:
    """A table of a folder of tables, by name and format."""
    return Path(folder) / f"{name}.{fmt}"


def store_path(data_dir: str | Path, data_set) -> Path:
    """The store of a data set in a folder of stores."""
    return Path(data_dir) / f"{_name(data_set)}.zarr"


def screen_store_path(data_dir: str | Path, cell_type: str) -> Path:
    """The screen store of a cell type in a folder of stores."""
    return Path(data_dir) / "screen" / f"{cell_type}.zarr"


def screen_data_set(cell_type: str) -> str:
    """The data set of a cell type's screen store: what its attributes and an export call it."""
    return f"{cell_type}-screen"


def prediction_path(folder: str | Path, name: str) -> Path:
    """A prediction of a test set, or of a cell type's screen, in a model's folder of them."""
    return Path(folder) / f"{name}.zarr"


def plate_path(folder: str | Path, plate: str) -> Path:
    """An OME-Zarr HCS plate in a folder of them: an export's, or the example plates'."""
    return Path(folder) / f"{plate}.ome.zarr"


@dataclass(frozen=True)
class Layout:
    """The paths of one grid, from its ``data.dir`` and ``results.dir``."""

    data: Path
    results: Path

    @classmethod
    def of(cls, config: dict) -> Layout:
        return cls(Path(config["data"]["dir"]), Path(config["results"]["dir"]))

    def store(self, data_set) -> Path:
        return store_path(self.data, data_set)

    def model_dir(self, model) -> Path:
        return self.results / "models" / _name(model)

    def run_dir(self, model, test_set) -> Path:
        return self.results / "runs" / _name(model) / _name(test_set)

    def run_table(self, model, test_set, name: str) -> Path:
        """One of a run's :data:`RUN_TABLES`."""
        return table_path(self.run_dir(model, test_set), name)

    def predictions(self, model) -> Path:
        """A model's predictions of its test sets, one group each (its inference job's output)."""
        return self.results / "predictions" / _name(model)

    def prediction(self, model, test_set) -> Path:
        return prediction_path(self.predictions(model), _name(test_set))

    def seed_spread(self, model_type: str, test_set) -> Path:
        """Per test image, the spread of a model type's seeds' predictions."""
        return self.results / "seed_spread" / model_type / f"{_name(test_set)}.parquet"

    def reference(self, test_set) -> Path:
        return self.results / "reference" / _name(test_set)

    def masks(self, test_set, segmented_stain: str) -> Path:
        """The masks of a segmented stain's real images."""
        return self.reference(test_set) / f"{segmented_stain}.masks.zarr"

    def real_masks(self, test_set, stain: str) -> Path:
        """The real-stain masks ``stain`` is measured in (the DAPI nuclei for cy5)."""
        return self.masks(test_set, masks_stain(stain))

    def real_features(self, test_set, stain: str) -> Path:
        return self.reference(test_set) / f"{stain}.features.parquet"

    def bf_texture(self, test_set) -> Path:
        return self.reference(test_set) / "bf_texture.parquet"

    def ranking(self, cell_type: str, stain: str) -> Path:
        return self.results / "reference" / "rankings" / f"{cell_type}.{stain}.tsv"

    def screen_store(self, cell_type: str) -> Path:
        return screen_store_path(self.data, cell_type)

    def screen_reference(self, cell_type: str) -> Path:
        """The real stains' masks, phenotype forests and per-well profiles of a cell type's screen."""
        return self.results / "screen" / "reference" / cell_type

    def screen_masks(self, cell_type: str, segmented_stain: str) -> Path:
        """The real masks of a segmented stain's screen (cy5 is measured in dapi's)."""
        return self.screen_reference(cell_type) / f"{segmented_stain}.masks.zarr"

    def screen_forest_masks(self, cell_type: str, segmented_stain: str) -> Path:
        """The real masks of a segmented stain in the phenotype forest's training fields."""
        return self.screen_reference(cell_type) / f"{segmented_stain}.forest_masks.zarr"

    def screen_forest(self, cell_type: str, stain: str) -> Path:
        """What a stain's phenotype forest is trained from (:class:`vsgrid.screen.wells.ForestTraining`)."""
        return self.screen_reference(cell_type) / f"{stain}.forest.parquet"

    def screen_real_wells(self, cell_type: str, stain: str) -> Path:
        return self.screen_reference(cell_type) / f"{stain}.wells.parquet"

    def screen_predictions(self, model) -> Path:
        return self.results / "screen" / "predictions" / _name(model)

    def screen_prediction(self, model, cell_type: str) -> Path:
        return prediction_path(self.screen_predictions(model), cell_type)

    def screen_wells(self, model, cell_type: str) -> Path:
        return self.results / "screen" / "runs" / _name(model) / f"{cell_type}.wells.parquet"

    def export(self, model, test_set) -> Path:
        """A run's OME-Zarr plates (:func:`plate_path`), one per plate of the test split."""
        return self.results / "export" / _name(model) / _name(test_set)

    def screen_export(self, model, cell_type: str) -> Path:
        """A screen run's OME-Zarr plates: the export of its screen store's data set."""
        return self.export(model, screen_data_set(cell_type))

    @property
    def tables(self) -> Path:
        return self.results / "tables"

    def table(self, name: str, fmt: str = "parquet") -> Path:
        return table_path(self.tables, name, fmt)

    @property
    def figures(self) -> Path:
        return self.results / "figures"

    def figure(self, name: str, fmt: str) -> Path:
        return self.figures / f"{name}.{fmt}"

    @property
    def logs(self) -> Path:
        return self.results / "logs"

    @property
    def benchmarks(self) -> Path:
        return self.results / "benchmarks"
