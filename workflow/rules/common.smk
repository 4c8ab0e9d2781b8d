# Shared by every rule: the validated config, the grid, the results layout and the config files
# the jobs read.

import json

from vsgrid import grid as vsgrid_grid
from vsgrid.layout import SEGMENTED, Layout


def _config_files():
    """The config files in the order Snakemake merged them: the configfile directive's, then
    --configfile's; relative to the working directory where they lie inside it, so that the jobs'
    parameters, and with them Snakemake's rerun decisions, survive moving the project."""
    overwrite = [str(f) for f in workflow.overwrite_configfiles]
    files = [str(f) for f in workflow.configfiles if str(f) not in overwrite] + overwrite
    here = Path.cwd().resolve()
    return [str(Path(f).resolve().relative_to(here)) if Path(f).resolve().is_relative_to(here) else f for f in files]


CONFIG_FILES = _config_files()
try:
    config.update(validate(config))
    if load_config(*CONFIG_FILES) != config:
        raise VsgridError(
            "snakemake --config KEY=VALUE overrides do not reach the jobs, which read the config files; "
            "put the change in a config file and pass it with --configfile"
        )
except VsgridError as error:
    raise WorkflowError(str(error)) from None

CONFIG_ARGS = " ".join(f"'{f}'" for f in CONFIG_FILES)
GRID = config["grid"]
LAYOUT = Layout.of(config)
LOGS = LAYOUT.logs
BENCHMARKS = LAYOUT.benchmarks
DATA_SETS = [d.name for d in vsgrid_grid.data_sets(GRID)]
MODELS = {m.name: m for m in vsgrid_grid.models(GRID)}
RUNS = vsgrid_grid.runs(config)
CELLPOSE = config["segmentation"]["backend"] == "cellpose"


wildcard_constraints:
    data_set="|".join(DATA_SETS),
    test_set="|".join(DATA_SETS),
    model="|".join(re.escape(m) for m in MODELS),
    stain="|".join(GRID["stains"]),
    cell_type="|".join(GRID["cell_types"]),


def settings(*sections):
    """Config sections as canonical JSON, for params: Snakemake then reruns exactly the jobs
    whose settings changed, however the config file orders its keys."""
    return json.dumps({section: config[section] for section in sections}, sort_keys=True)


def model_stain(wildcards):
    return MODELS[wildcards.model].stain


def gpu(needed):
    """A GPU for the rules that use one; the SLURM profile turns it into --gpus."""
    return 1 if needed else 0


def ranking_inputs(wildcards):
    """The real-stain features of every test set of a cell type, named by test set."""
    return {
        test_set.name: LAYOUT.real_features(test_set, wildcards.stain)
        for test_set in vsgrid_grid.data_sets(GRID)
        if test_set.cell_type == wildcards.cell_type
    }


def run_inputs(wc):
    """What scoring a run reads beside its prediction: the real masks, features and ranking."""
    stain, test_set = model_stain(wc), vsgrid_grid.DataSet.parse(wc.test_set)
    return {
        "real_masks": LAYOUT.real_masks(test_set, stain),
        "real_features": LAYOUT.real_features(test_set, stain),
        "ranking": LAYOUT.ranking(test_set.cell_type, stain),
    }


PANELS = vsgrid_grid.panel_runs(config)
FIGURES = ["figure2", "figure4", "figure6a", "figure6b", *PANELS]


def figure(name, ext):
    """A figure file; the PNGs go into the report with their captions."""
    path = LAYOUT.figures / f"{name}.{ext}"
    if ext != "png":
        return path
    return report(path, caption=f"../report/{name}.rst", category="Figures", labels={"figure": name})
