"""vsgrid: the train x test grid of virtual-staining models as a Snakemake workflow.

    snakemake --profile profiles/local --configfile config/quick.yaml    # laptop, synthetic data
    snakemake --profile profiles/slurm                                     # cluster, config/config.yaml

Parsing is cheap (every job re-reads this file): it validates the config and expands the grid
with vsgrid.config and vsgrid.grid, which import neither torch nor any data.
"""

import re
import sys
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")

sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from vsgrid.config import load_config, validate  # noqa: E402
from vsgrid.errors import VsgridError  # noqa: E402


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/infer.smk"
include: "workflow/rules/segment.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/tables.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/screen.smk"
include: "workflow/rules/export.smk"


report: "workflow/report/workflow.rst"


rule all:
    input:
        rules.models.input,
        rules.tables.output,
        rules.figures.output,
        rules.screen_tables.output if SCREEN_RUNS else [],
        rules.screen_figures.output if SCREEN_RUNS else [],
    default_target: True
