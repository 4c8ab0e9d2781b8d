# On demand, not part of `all`: every run's real and virtual stains as OME-Zarr HCS plates, one
# per plate of the test set (`snakemake export_all`, or one run's folder by its path). An export
# depends on its store and prediction only, so no config section reruns it.


rule export:
    input:
        store=LAYOUT.store("{test_set}"),
        # run_of refuses, before any job, a (model, test set) that is not a run of the grid
        predictions=lambda wc: run_of(wc) and LAYOUT.predictions(wc.model),
    output:
        directory(LAYOUT.export("{model}", "{test_set}")),
    log:
        LOGS / "export" / "{model}" / "{test_set}.log",
    benchmark:
        BENCHMARKS / "export" / "{model}" / "{test_set}.tsv"
    threads: 1
    resources:
        **resources("export", SPLITS["test"]),
    shell:
        VSGRID.format(command="export")
        + " --model {wildcards.model:q} --test-set {wildcards.test_set:q}"
        " --out {output:q} --quiet > {log:q} 2>&1"


# A screen's test set is its store's data set (vsgrid.layout.screen_data_set).
rule export_screen:
    input:
        store=LAYOUT.screen_store("{cell_type}"),
        predictions=LAYOUT.screen_predictions("{model}"),
    output:
        directory(LAYOUT.screen_export("{model}", "{cell_type}")),
    log:
        LOGS / "export_screen" / "{model}" / "{cell_type}.log",
    benchmark:
        BENCHMARKS / "export_screen" / "{model}" / "{cell_type}.tsv"
    threads: 1
    resources:
        **resources("export", SCREEN_IMAGES),
    shell:
        VSGRID.format(command="export")
        + " --model {wildcards.model:q} --screen {wildcards.cell_type:q}"
        " --out {output:q} --quiet > {log:q} 2>&1"


rule export_all:
    input:
        [LAYOUT.export(run.model, run.test_set) for run in RUNS],
        [LAYOUT.screen_export(run.model, run.cell_type) for run in SCREEN_RUNS],
