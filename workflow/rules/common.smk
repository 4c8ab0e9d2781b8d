# Shared by every rule: the validated config, the grid's names and the config files the jobs read.

from vsgrid import grid as vsgrid_grid


def _config_files():
    """The config files in the order Snakemake merged them: the configfile directive's, then --configfile's."""
    overwrite = [str(f) for f in workflow.overwrite_configfiles]
    return [str(f) for f in workflow.configfiles if str(f) not in overwrite] + overwrite


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
DATA = config["data"]["dir"]
DATA_SETS = [d.name for d in vsgrid_grid.data_sets(config["grid"])]
STORES = expand("{data}/{data_set}.zarr", data=DATA, data_set=DATA_SETS)


wildcard_constraints:
    data_set="|".join(DATA_SETS),
