"""The train x test grid: data sets, models, runs, their task and their baseline.

Vocabulary, used one way everywhere:

- a *data set* is a (cell type, phenotype) pair, named ``lung-nontoxic``; used for training it is
  a *train set*, for testing a *test set*. Level 4 may also train on ``lung-both``, fields of both
  phenotypes of the cell type's training plates: the model a screening team would deploy on its
  own screen (``evaluation.screen.train_phenotypes``);
- a *model* is (train set, stain, seed), named ``lung-nontoxic.dapi.s0``;
- a *model type* is a model without its seed (``lung-nontoxic.dapi``): the report averages seeds;
- a *run* is (model, test set), named ``lung-nontoxic.dapi.s0@ovarian-toxic``;
- a run's *baseline* is the model type trained on the test set's distribution (or, with
  ``baseline: train_celltype``, the toxic model type of the training cell type);
- a *control* is a test set rendered again from the same fields with other bright-field optics
  (``lung-nontoxic+defocus``, its *twin* being ``lung-nontoxic``): the models trained on the twin
  are tested on it (task 0, shift ``acquisition``) against themselves on the twin, image for
  image. Whatever the optics change must show as a loss: a positive control of the instrument.
- a *screen control* is level 4's: a virtual stain made from a screen's real stain with no model
  (``control-oracle.dapi``: the real stain plus camera noise, which must be replaceable;
  ``control-degraded.dapi``: blurred, which must not; ``control-affine.dapi``: the oracle under a
  per-plate gain and offset, which sentinel wells must recalibrate). Scored as a model's stain.

Tasks follow the paper's own counting (54 / 54 / 135 runs):

======================  ==========  ============================================
train set -> test set   task        comparison
======================  ==========  ============================================
NT_c -> NT_c            1           baseline of task 2
NT_c -> T_c             1           new phenotype
NT_c -> NT_c'           2           new cell type
T_c  -> T_c             3           baseline of tasks 1 and 3
T_c  -> T_c'            3           toxic-trained comparison
NT_c -> T_c'            3           new phenotype and cell type
T_c  -> NT_c            1           (``pairs: all`` only) new phenotype
T_c  -> NT_c'           3           (``pairs: all`` only) new phenotype and cell type
======================  ==========  ============================================

This module needs nothing beyond the standard library: the Snakefile imports it at parse time.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass
from itertools import product

from vsgrid.errors import VsgridError

NONTOXIC, TOXIC, BOTH = "nontoxic", "toxic", "both"
# A 384-well plate: the synthetic plates' layout, and the screen's size where the Snakefile plans.
ROWS, COLUMNS = 16, 24
# The stains that are segmented, and the ground-truth mask each outlines. Every other stain (cy5)
# has no objects of its own: it is measured inside the real DAPI nuclei, real and predicted alike.
SEGMENTED = {"dapi": "nucleus", "fitc": "cell"}
NUCLEI = "dapi"


def masks_stain(stain: str) -> str:
    """The stain whose masks ``stain``'s features are measured in."""
    return stain if stain in SEGMENTED else NUCLEI


@dataclass(frozen=True, order=True)
class DataSet:
    """A (cell type, phenotype) pair: a train set or a test set; with an ``acquisition``, a control."""

    cell_type: str
    phenotype: str
    acquisition: str = ""

    @property
    def name(self) -> str:
        return f"{self.cell_type}-{self.phenotype}" + (
            f"+{self.acquisition}" if self.acquisition else ""
        )

    @property
    def phenotypes(self) -> tuple[str, ...]:
        """The phenotypes of the wells its fields are drawn from."""
        return (NONTOXIC, TOXIC) if self.phenotype == BOTH else (self.phenotype,)

    @property
    def twin(self) -> DataSet:
        """The data set a control re-acquires (a data set is its own twin)."""
        return DataSet(self.cell_type, self.phenotype)

    @classmethod
    def parse(cls, name: str) -> DataSet:
        pair, _, acquisition = name.partition("+")
        cell_type, sep, phenotype = pair.partition("-")
        if (
            not sep
            or not cell_type
            or phenotype not in (NONTOXIC, TOXIC, BOTH)
            or (_ and not acquisition)
            or (phenotype == BOTH and acquisition)
        ):
            raise ValueError(
                f"{name!r} is not a data set name like 'lung-nontoxic' (or a control like "
                "'lung-nontoxic+defocus', or level 4's train set 'lung-both')"
            )
        return cls(cell_type, phenotype, acquisition)


@dataclass(frozen=True, order=True)
class Model:
    """(train set, stain, seed): one trained network."""

    train_set: DataSet
    stain: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.train_set.name}.{self.stain}.s{self.seed}"

    @property
    def model_type(self) -> str:
        """The model without its seed: what the report averages seeds over."""
        return f"{self.train_set.name}.{self.stain}"

    @classmethod
    def parse(cls, name: str) -> Model:
        train_set, _, rest = name.partition(".")
        stain, _, seed = rest.partition(".")
        if not stain or not seed.startswith("s") or not seed[1:].isdigit():
            raise ValueError(f"{name!r} is not a model name like 'lung-nontoxic.dapi.s0'")
        return cls(DataSet.parse(train_set), stain, int(seed[1:]))


@dataclass(frozen=True, order=True)
class Run:
    """(model, test set): one inference and evaluation, with its task and baseline."""

    model: Model
    test_set: DataSet
    task: int
    shift: str
    baseline_train_set: DataSet | None

    @property
    def name(self) -> str:
        return f"{self.model.name}@{self.test_set.name}"

    @property
    def is_baseline(self) -> bool:
        return self.model.train_set == self.test_set


def data_sets(grid: dict) -> list[DataSet]:
    """Every (cell type, phenotype) of the grid, in config order."""
    return [DataSet(c, p) for c, p in product(grid["cell_types"], grid["phenotypes"])]


def controls(grid: dict) -> list[DataSet]:
    """The grid's controls, in config order."""
    return [
        DataSet(**{**vars(DataSet.parse(c["test_set"])), "acquisition": c["acquisition"]})
        for c in grid["controls"]
    ]


def test_sets(grid: dict) -> list[DataSet]:
    """Every data set a model is tested on: the data sets, then the controls."""
    return data_sets(grid) + controls(grid)


def restrict(config: dict, names: list[str] | None) -> dict:
    """The config with its grid restricted to the named data sets and controls (``--data-set``),
    or unchanged."""
    if not names:
        return config
    known = {d.name: d for d in test_sets(config["grid"]) + screen_train_sets(config)}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise VsgridError(
            f"--data-set {', '.join(unknown)} is not in the grid; known: {', '.join(sorted(known))}"
        )
    plain = [known[n] for n in names if not known[n].acquisition]
    grid = dict(
        config["grid"],
        cell_types=sorted({d.cell_type for d in plain}),
        phenotypes=sorted({d.phenotype for d in plain}),
        controls=[
            c
            for c, d in zip(config["grid"]["controls"], controls(config["grid"]))
            if d.name in names
        ],
    )
    if len(plain) != len(grid["cell_types"]) * len(grid["phenotypes"]):
        raise VsgridError(
            "--data-set must name a full cell type x phenotype block; give one data set per call"
        )
    return dict(config, grid=grid)


def seeds_of(grid: dict, stain: str) -> list[int]:
    """The seeds of a stain's models: ``grid.stain_seeds`` where it names the stain, else
    ``grid.seeds``."""
    return grid["stain_seeds"].get(stain, grid["seeds"])


def models(grid: dict) -> list[Model]:
    """Every (train set, stain, seed) of the grid: 54 for the paper's."""
    return [
        Model(d, stain, seed)
        for d, stain in product(data_sets(grid), grid["stains"])
        for seed in seeds_of(grid, stain)
    ]


def find_model(config: dict, train_set: str, stain: str, seed: int) -> Model:
    """The model named by a train set, a stain and a seed, which must be the grid's."""
    try:
        data_set = DataSet.parse(train_set)
    except ValueError as exc:
        raise VsgridError(f"--train-set: {exc}") from None
    known = [d.name for d in data_sets(config["grid"]) + screen_train_sets(config)]
    if data_set.name not in known:  # "../x-toxic" parses, and would name a folder outside
        raise VsgridError(
            f"--train-set {train_set!r} is not a data set of the grid ({', '.join(known)})"
        )
    if stain not in config["grid"]["stains"]:
        raise VsgridError(
            f"--stain {stain!r} is not in grid.stains ({', '.join(config['grid']['stains'])})"
        )
    seeds = seeds_of(config["grid"], stain)
    if seed not in seeds:  # also keeps it in every library's range (the schema's)
        raise VsgridError(
            f"--seed {seed} is not one of {stain}'s seeds ({', '.join(map(str, seeds))}; "
            "grid.seeds, grid.stain_seeds)"
        )
    return Model(data_set, stain, seed)


def is_paper_pair(train_set: DataSet, test_set: DataSet) -> bool:
    """The paper tests toxic-trained models on toxic test sets only."""
    return not (train_set.phenotype == TOXIC and test_set.phenotype == NONTOXIC)


def shift_of(train_set: DataSet, test_set: DataSet) -> str:
    """What differs between training and test distribution: none, phenotype, cell_type or both."""
    new_phenotype = train_set.phenotype != test_set.phenotype
    new_cell_type = train_set.cell_type != test_set.cell_type
    return {
        (False, False): "none",
        (True, False): "phenotype",
        (False, True): "cell_type",
        (True, True): "both",
    }[(new_phenotype, new_cell_type)]


def task_of(train_set: DataSet, test_set: DataSet) -> int:
    """The paper's task of a (train set, test set) pair; see the module docstring."""
    same_cell_type = train_set.cell_type == test_set.cell_type
    if train_set.phenotype == test_set.phenotype == NONTOXIC:
        return 1 if same_cell_type else 2
    if same_cell_type and train_set.phenotype != test_set.phenotype:
        return 1
    return 3


def baseline_of(train_set: DataSet, test_set: DataSet, baseline: str) -> DataSet | None:
    """The train set whose model (same stain, averaged over seeds) a run is compared with, on the
    test set's twin (for a control, the test set it re-acquires; else the test set itself).

    ``test_distribution`` (paper): the model trained on the test set's own distribution.
    ``train_celltype``: the toxic-trained model of the training cell type (none for a control).
    """
    if baseline == "test_distribution":
        return test_set.twin
    if baseline == "train_celltype":
        return None if test_set.acquisition else DataSet(train_set.cell_type, TOXIC)
    raise ValueError(f"unknown baseline {baseline!r}")


def pairs(grid: dict) -> list[tuple[DataSet, DataSet]]:
    """The (train set, test set) pairs the grid keeps: 27 for the paper's, 36 for ``all``."""
    sets = data_sets(grid)
    keep_all = grid["pairs"] == "all"
    return [(a, b) for a, b in product(sets, sets) if keep_all or is_paper_pair(a, b)]


def runs(config: dict, baseline: str | None = None) -> list[Run]:
    """Every run of the grid with its task, shift and baseline train set.

    ``baseline`` defaults to the config's. A run whose baseline pair is not in the grid
    (possible with ``train_celltype`` and ``pairs: paper``) gets ``baseline_train_set=None``.
    """
    grid = config["grid"]
    baseline = baseline or config["baseline"]
    kept = set(pairs(grid))
    tested = [
        (train_set, test_set, task_of(train_set, test_set), shift_of(train_set, test_set))
        for train_set, test_set in pairs(grid)
    ]
    tested += [(control.twin, control, 0, "acquisition") for control in controls(grid)]
    result = []
    for train_set, test_set, task, shift in tested:
        base = baseline_of(train_set, test_set, baseline)
        base = base if (base, test_set.twin) in kept else None
        for stain in grid["stains"]:
            for seed in seeds_of(grid, stain):
                result.append(Run(Model(train_set, stain, seed), test_set, task, shift, base))
    return result


def seed_groups(config: dict) -> dict[tuple[str, str], list[Run]]:
    """The runs of a model type on a test set, by (model type, test set name), where there are two
    seeds or more: what the spread over seeds is measured on."""
    groups: dict[tuple[str, str], list[Run]] = {}
    for run in runs(config):
        groups.setdefault((run.model.model_type, run.test_set.name), []).append(run)
    return {key: group for key, group in groups.items() if len(group) > 1}


def counts(config: dict) -> dict[str, int]:
    """Models, runs and runs per task: what ``vsgrid grid`` prints."""
    all_runs = runs(config)
    per_task = Counter(run.task for run in all_runs)
    return {
        "models": len(models(config["grid"])),
        "runs": len(all_runs),
        **{f"task {task}": per_task[task] for task in sorted(per_task)},
        "baseline runs": sum(run.is_baseline for run in all_runs),
    }


# Level 4's screen controls, in the order the tables show them: what the instrument must accept,
# what it must refuse, and what sentinel wells must repair.
ORACLE, DEGRADED, AFFINE = "oracle", "degraded", "affine"
SCREEN_CONTROLS = (ORACLE, DEGRADED, AFFINE)
CONTROL_PREFIX = "control-"


@dataclass(frozen=True, order=True)
class ScreenControl:
    """A virtual stain made from a screen's real stain with no model (``control-oracle.dapi``):
    it stands where a model stands in a screen run, with a model's name, model type, stain and
    seed, and no train set. Its one draw of noise is its seed 0."""

    control: str
    stain: str
    seed = 0
    train_set = None

    @property
    def name(self) -> str:
        return f"{CONTROL_PREFIX}{self.control}.{self.stain}"

    @property
    def model_type(self) -> str:
        return self.name

    @classmethod
    def parse(cls, name: str) -> ScreenControl:
        control, _, stain = name.removeprefix(CONTROL_PREFIX).partition(".")
        if not name.startswith(CONTROL_PREFIX) or control not in SCREEN_CONTROLS or not stain:
            raise ValueError(
                f"{name!r} is not a screen control name like '{CONTROL_PREFIX}{ORACLE}.dapi'"
            )
        return cls(control, stain)


@dataclass(frozen=True)
class ScreenRun:
    """(model or screen control, screen cell type): a virtual screen of a cell type's held-out
    plates, and the model whose screen of them it is compared with (trained on that cell type,
    same phenotype; a control has none)."""

    model: Model | ScreenControl
    cell_type: str

    @property
    def baseline(self) -> Model | None:
        if self.model.train_set is None:
            return None
        return Model(
            DataSet(self.cell_type, self.model.train_set.phenotype),
            self.model.stain,
            self.model.seed,
        )

    @property
    def is_baseline(self) -> bool:
        return self.model == self.baseline


def screen_stains(config: dict) -> list[str]:
    return config["evaluation"]["screen"]["stains"] or config["grid"]["stains"]


def screen_fields_per_well(config: dict, cell_type: str) -> int:
    """Fields imaged per well of a cell type's screen: ``evaluation.screen.fields_per_well``, one
    number for every cell type or one per cell type (a sparse cell line needs more fields for as
    many cells per well, as a screen's acquisition is set up)."""
    fields = config["evaluation"]["screen"]["fields_per_well"]
    return fields[cell_type] if isinstance(fields, dict) else fields


def screen_models(config: dict) -> list[Model]:
    """Level 4's models, of its stains: the grid's trained on ``evaluation.screen.train_phenotypes``
    and, where that lists ``both``, one per cell type and seed trained on both phenotypes of the
    cell type's training plates (``lung-both.dapi.s0``), which levels 1 to 3 do not test (none
    unless ``evaluation.screen.enabled``)."""
    screen, grid = config["evaluation"]["screen"], config["grid"]
    if not screen["enabled"]:
        return []
    stains = screen_stains(config)
    chosen = [
        m
        for m in models(grid)
        if m.train_set.phenotype in screen["train_phenotypes"] and m.stain in stains
    ]
    if BOTH in screen["train_phenotypes"]:
        chosen += [
            Model(DataSet(cell_type, BOTH), stain, seed)
            for cell_type, stain in product(grid["cell_types"], stains)
            for seed in seeds_of(grid, stain)
        ]
    return chosen


def screen_train_sets(config: dict) -> list[DataSet]:
    """Level 4's own train sets (``lung-both``), in config order."""
    return list(
        dict.fromkeys(m.train_set for m in screen_models(config) if m.train_set.phenotype == BOTH)
    )


def screened_cell_types(config: dict, model: Model) -> list[str]:
    """The cell types whose screens a level-4 model predicts: every one, or its own for a model
    trained on both phenotypes, which stands for the training a team runs on its own plates."""
    if model.train_set.phenotype == BOTH:
        return [model.train_set.cell_type]
    return list(config["grid"]["cell_types"])


def screen_runs(config: dict) -> list[ScreenRun]:
    """Level 4's runs: each of :func:`screen_models` on each screen it predicts
    (:func:`screened_cell_types`)."""
    return [
        ScreenRun(model, cell_type)
        for model in screen_models(config)
        for cell_type in screened_cell_types(config, model)
    ]


def screen_controls(config: dict) -> tuple[str, ...]:
    """The controls level 4 scores (``evaluation.screen.controls.names``), in
    :data:`SCREEN_CONTROLS` order."""
    names = config["evaluation"]["screen"]["controls"]["names"]
    return tuple(c for c in SCREEN_CONTROLS if c in names)


def control_runs(config: dict) -> list[ScreenRun]:
    """Level 4's screen controls: each of :func:`screen_controls` on every screen and stain that
    level 4 scores (none unless ``evaluation.screen.enabled`` and its ``controls.enabled``)."""
    screen = config["evaluation"]["screen"]
    if not (screen["enabled"] and screen["controls"]["enabled"]):
        return []
    return [
        ScreenRun(ScreenControl(control, stain), cell_type)
        for cell_type in config["grid"]["cell_types"]
        for stain in screen_stains(config)
        for control in screen_controls(config)
    ]


TSV_COLUMNS = [
    "run",
    "model",
    "model_type",
    "train_set",
    "test_set",
    "stain",
    "seed",
    "task",
    "shift",
    "baseline_train_set",
]


def runs_tsv(config: dict) -> str:
    """The runs as a tab-separated table with a header, one row per run."""
    out = io.StringIO()
    writer = csv.writer(out, delimiter="\t", lineterminator="\n")
    writer.writerow(TSV_COLUMNS)
    for run in runs(config):
        writer.writerow(
            [
                run.name,
                run.model.name,
                run.model.model_type,
                run.model.train_set.name,
                run.test_set.name,
                run.model.stain,
                run.model.seed,
                run.task,
                run.shift,
                run.baseline_train_set.name if run.baseline_train_set else "",
            ]
        )
    return out.getvalue()


def focus_cell_type(config: dict) -> str:
    """The cell type of Figures 3 and 4: ``figures.focus_cell_type``, else ovarian (the paper's), else the first."""
    cell_types = config["grid"]["cell_types"]
    chosen = config["figures"]["focus_cell_type"]
    return chosen if chosen else ("ovarian" if "ovarian" in cell_types else cell_types[0])


def panel_runs(config: dict) -> dict[str, dict]:
    """The runs the qualitative panels show (Figures 3 and 5), with ``{stain}`` left in the model names.

    Figure 3: the focus cell type's toxic test set, predicted by its toxic (baseline) and its
    non-toxic model. Figure 5: the first cell type's non-toxic test set, predicted by its own
    (baseline) and every other cell type's non-toxic model. First seed of the grid.
    """
    grid = config["grid"]
    seed = grid["seeds"][0]
    focus, first = focus_cell_type(config), grid["cell_types"][0]
    panels = {}
    if TOXIC in grid["phenotypes"] and NONTOXIC in grid["phenotypes"]:
        panels["figure3"] = {
            "test_set": DataSet(focus, TOXIC).name,
            "models": [f"{DataSet(focus, p).name}.{{stain}}.s{seed}" for p in (TOXIC, NONTOXIC)],
            "columns": [f"trained on {focus} toxic (baseline)", f"trained on {focus} non-toxic"],
            "title": f"Figure 3: new phenotype, {focus} toxic test image",
        }
    if NONTOXIC in grid["phenotypes"]:
        others = [c for c in grid["cell_types"] if c != first]
        panels["figure5"] = {
            "test_set": DataSet(first, NONTOXIC).name,
            "models": [f"{DataSet(c, NONTOXIC).name}.{{stain}}.s{seed}" for c in (first, *others)],
            "columns": [f"trained on {first} (baseline)", *[f"trained on {c}" for c in others]],
            "title": f"Figure 5: new cell type, {first} non-toxic test image",
        }
    return panels
