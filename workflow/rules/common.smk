# Shared by every rule: the grid, the results layout, how a job runs vsgrid, and the input
# functions and helpers of the rules.

import json

from vsgrid import grid as vsgrid_grid
from vsgrid.config import result_settings
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

VSGRID = 'vsgrid {command} --config "$VSGRID_CONFIG"'
# torch's kernels use every core unless told; a job gets its `threads` (prefix of the torch rules).
TORCH_THREADS = "export OMP_NUM_THREADS={threads}; "

GRID = config["grid"]
LAYOUT = Layout.of(config)
LOGS = LAYOUT.logs
BENCHMARKS = LAYOUT.benchmarks
DATA_SETS = [d.name for d in vsgrid_grid.test_sets(GRID)]  # the grid's data sets and its controls
# and the stores of level 4's own train sets (lung-both: vsgrid.grid.screen_models)
STORES = DATA_SETS + [d.name for d in vsgrid_grid.screen_train_sets(config)]
# the grid's models, and level 4's own (trained on both phenotypes: grid.screen_models)
MODELS = {m.name: m for m in vsgrid_grid.models(GRID) + vsgrid_grid.screen_models(config)}
RUNS = vsgrid_grid.runs(config)
RUN_NAMES = {run.name for run in RUNS}
TEST_SETS_OF = {
    name: [run.test_set.name for run in RUNS if run.model.name == name] for name in MODELS
}
SEED_GROUPS = vsgrid_grid.seed_groups(config)  # (model type, test set) -> its runs, 2 seeds or more
# Level 4 (evaluation.screen): its runs, and its controls (virtual stains made from the real one
# with no model, scored as a model's).
SCREEN_RUNS = vsgrid_grid.screen_runs(config)
CONTROL_RUNS = vsgrid_grid.control_runs(config)
SCREEN_CONTROLS = {run.model.name: run.model for run in CONTROL_RUNS}
SCREEN_MODELS = sorted({run.model.name for run in SCREEN_RUNS}) + sorted(SCREEN_CONTROLS)


def settings(*sections):
    """What a rule's results depend on, as canonical JSON for params: Snakemake then reruns
    exactly the jobs whose settings changed, however the config file orders its keys."""
    return json.dumps(result_settings(config, *sections), sort_keys=True)


def model_stain(wildcards):
    return MODELS[wildcards.model].stain


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


def screen_model(name):
    """A screen run's model or screen control, by name."""
    return MODELS.get(name) or SCREEN_CONTROLS[name]


def screened_cell_types(wildcards):
    """The cell types whose screens a model predicts."""
    return vsgrid_grid.screened_cell_types(config, MODELS[wildcards.model])


def screen_stores(wildcards):
    return [LAYOUT.screen_store(c) for c in screened_cell_types(wildcards)]


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
        "forest": LAYOUT.screen_forest(wc.cell_type, stain),
        "nuclei": LAYOUT.screen_masks(wc.cell_type, masks_stain(stain)),
    }


def figure(name, ext):
    """A figure file (level 4's too, rules/screen.smk); the PNGs go into the report with their
    captions."""
    path = LAYOUT.figure(name, ext)
    if ext != "png":
        return path
    return report(
        path, caption=f"../report/{name}.rst", category="Figures", labels={"figure": name}
    )
