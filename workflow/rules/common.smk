# Shared by every rule: the validated config, the grid, the results layout, and how a job gets
# its config.

import hashlib
import json
import shlex

from vsgrid import grid as vsgrid_grid
from vsgrid.config import read_yaml, result_settings, typed_strings
from vsgrid.files import write_text
from vsgrid.grid import SEGMENTED, masks_stain
from vsgrid.layout import (
    GRID_FIGURES,
    GRID_TABLES,
    OUTCOME,
    RUN_TABLES,
    SCREEN_FIGURES,
    SCREEN_OUTCOME,
    SCREEN_TABLES,
    TABLE_FORMATS,
    TRUST_TABLE,
    Layout,
)
from vsgrid.resources import (
    REFERENCE_PIXELS,
    config_pixels,
    job_resources,
    train_retries,
    training_work,
)

try:
    # Snakemake merges --configfile files keeping the last of a key given twice: vsgrid refuses it.
    for path in workflow.configfiles:
        read_yaml(path)
    config.update(validate(typed_strings(config)))
except VsgridError as error:
    raise WorkflowError(str(error)) from None


# Every job gets the whole validated config, however it arrived (--configfile files, overlays,
# --config KEY=VALUE): written once as JSON, named by its content, and handed to the jobs as
# `vsgrid ... --config "$VSGRID_CONFIG"`. Snakemake's rerun decisions come from each rule's
# `settings` param instead, the sections that rule's results depend on, so that a change reruns
# exactly the rules it concerns.
def _config_file():
    text = json.dumps(config, sort_keys=True, indent=1)
    path = (
        Path(".snakemake")
        / "vsgrid"
        / f"config-{hashlib.sha256(text.encode()).hexdigest()[:16]}.json"
    )
    if not path.exists():
        write_text(text, path)
    return path


shell.prefix(f"set -euo pipefail; export VSGRID_CONFIG={shlex.quote(str(_config_file()))}; ")
VSGRID = 'vsgrid {command} --config "$VSGRID_CONFIG"'
# torch's kernels use every core unless told; a job gets its `threads` (prefix of the torch rules).
TORCH_THREADS = "export OMP_NUM_THREADS={threads}; "

GRID = config["grid"]
LAYOUT = Layout.of(config)
LOGS = LAYOUT.logs
BENCHMARKS = LAYOUT.benchmarks
DATA_SETS = [d.name for d in vsgrid_grid.test_sets(GRID)]  # the grid's data sets and its controls
MODELS = {m.name: m for m in vsgrid_grid.models(GRID)}
RUNS = vsgrid_grid.runs(config)
RUN_NAMES = {run.name for run in RUNS}
TEST_SETS_OF = {
    name: [run.test_set.name for run in RUNS if run.model.name == name] for name in MODELS
}
SEED_GROUPS = vsgrid_grid.seed_groups(config)  # (model type, test set) -> its runs, 2 seeds or more
CELLPOSE = config["segmentation"]["backend"] == "cellpose"
# Feature processes of the jobs that measure (features.workers; 0 = 4 per job, a CPU node's share).
FEATURE_WORKERS = config["features"]["workers"] or 4


wildcard_constraints:
    data_set="|".join(re.escape(d) for d in DATA_SETS),
    test_set="|".join(re.escape(d) for d in DATA_SETS),
    model="|".join(re.escape(m) for m in MODELS),
    stain="|".join(GRID["stains"]),
    cell_type="|".join(GRID["cell_types"]),


def settings(*sections):
    """What a rule's results depend on, as canonical JSON for params: Snakemake then reruns
    exactly the jobs whose settings changed, however the config file orders its keys."""
    return json.dumps(result_settings(config, *sections), sort_keys=True)


def model_stain(wildcards):
    return MODELS[wildcards.model].stain


def gpu(needed):
    """A GPU for the rules that use one; the SLURM profile turns it into --gpus."""
    return 1 if needed else 0


SPLITS = config["data"]["splits"]
PIXELS = config_pixels(config)


def resources(step, images, pixels=PIXELS):
    """A step's mem_mb and runtime from its measured cost (vsgrid.resources), for jobs of
    ``images`` images (a number, or a function of the wildcards), growing with each retry."""

    def estimate(wildcards, threads, attempt):
        n = images(wildcards) if callable(images) else images
        return job_resources(step, images=n, pixels=pixels, threads=threads, attempt=attempt)

    return {
        "mem_mb": lambda wildcards, threads, attempt: estimate(wildcards, threads, attempt)[
            "mem_mb"
        ],
        "runtime": lambda wildcards, threads, attempt: estimate(wildcards, threads, attempt)[
            "runtime"
        ],
    }


def run_of(wildcards):
    """The run (model, test set) a job is for, which must be one of the grid's."""
    name = f"{wildcards.model}@{wildcards.test_set}"
    if name not in RUN_NAMES:
        raise WorkflowError(
            f"{wildcards.model} on {wildcards.test_set} is not a run of this grid "
            f"(grid.pairs: {GRID['pairs']}; `vsgrid grid --config ... --tsv runs.tsv` lists the runs)"
        )
    return name


def run_inputs(wc):
    """What scoring a run reads beside its prediction: the real masks, features and ranking."""
    run_of(wc)
    stain, test_set = model_stain(wc), vsgrid_grid.DataSet.parse(wc.test_set)
    return {  # a control's stains are its twin's, byte for byte: so are its reference masks and features
        "real_masks": LAYOUT.real_masks(test_set.twin, stain),
        "real_features": LAYOUT.real_features(test_set.twin, stain),
        "ranking": LAYOUT.ranking(test_set.cell_type, stain),
    }


def ranking_inputs(wildcards):
    """The real-stain features of every test set of a cell type, named by test set."""
    return {
        test_set.name: LAYOUT.real_features(test_set, wildcards.stain)
        for test_set in vsgrid_grid.data_sets(GRID)
        if test_set.cell_type == wildcards.cell_type
    }


PANELS = vsgrid_grid.panel_runs(config)
FIGURES = [*GRID_FIGURES, *PANELS]


def figure(name, ext):
    """A figure file; the PNGs go into the report with their captions."""
    path = LAYOUT.figure(name, ext)
    if ext != "png":
        return path
    return report(
        path, caption=f"../report/{name}.rst", category="Figures", labels={"figure": name}
    )


# Level 4 (evaluation.screen): its runs, its controls (virtual stains made from the real one with
# no model, scored as a model's), and what a screen job reads.
SCREEN_RUNS = vsgrid_grid.screen_runs(config)
CONTROL_RUNS = vsgrid_grid.control_runs(config)
SCREEN_CONTROLS = {run.model.name: run.model for run in CONTROL_RUNS}
SCREEN_MODELS = sorted({run.model.name for run in SCREEN_RUNS}) + sorted(SCREEN_CONTROLS)
SCREEN = config["evaluation"]["screen"]
# A whole plate per held-out plate, of the cell type imaged with the most fields per well (an upper
# bound when only some compounds are kept).
_PLATES = config["data"]["test_plates"]
SCREEN_IMAGES = (
    vsgrid_grid.ROWS
    * vsgrid_grid.COLUMNS
    * (_PLATES if isinstance(_PLATES, int) else len(_PLATES))
    * max(vsgrid_grid.screen_fields_per_well(config, c) for c in GRID["cell_types"])
)
# screen_tables compares the runs of one (screen, stain, seed, training phenotype) at a time, and
# the controls of one (screen, stain).
SCREEN_GROUPS = len(
    {(r.cell_type, r.model.stain, r.model.seed, r.model.train_set.phenotype) for r in SCREEN_RUNS}
) + len({(r.cell_type, r.model.stain) for r in CONTROL_RUNS})


# The fields whose cells train a cell type's phenotype forest (the screen store's train split).
FOREST_IMAGES = SCREEN["forest_fields"]


def screen_masks(cell_type, stain):
    """The real masks of a segmented stain's screen (dapi, fitc; cy5 is measured in dapi's)."""
    return LAYOUT.screen_reference(cell_type) / f"{stain}.masks.zarr"


def screen_forest_masks(cell_type, stain):
    """The real masks of a segmented stain in the phenotype forest's training fields."""
    return LAYOUT.screen_reference(cell_type) / f"{stain}.forest_masks.zarr"


def screen_model(name):
    """A screen run's model or screen control, by name."""
    return MODELS.get(name) or SCREEN_CONTROLS[name]


def screen_run_inputs(wc):
    """What profiling a virtual screen reads: the prediction (a model's inference job's folder, or
    the control's own prediction), the real stain's profiles and forest, and the real masks."""
    stain = screen_model(wc.model).stain
    return {
        "predictions": (
            LAYOUT.screen_predictions(wc.model)
            if wc.model in MODELS
            else LAYOUT.screen_prediction(wc.model, wc.cell_type)
        ),
        "reference": LAYOUT.screen_real_wells(wc.cell_type, stain),
        "forest": LAYOUT.screen_reference(wc.cell_type) / f"{stain}.forest.parquet",
        "nuclei": screen_masks(wc.cell_type, masks_stain(stain)),
    }
