# The paper's figures from the tables (and, for the panels, a few predictions).
# `snakemake figures` redraws them; a change to the figures section of the config reruns only this.
PANELS = vsgrid_grid.panel_runs(config)
FIGURES = [*GRID_FIGURES, *PANELS]


rule figures:
    input:
        tables=LAYOUT.table("deltas"),
        features=LAYOUT.table("features"),
        trust=LAYOUT.table(TRUST_TABLE),
        predictions=[
            LAYOUT.predictions(model.format(stain=stain))
            for panel in PANELS.values()
            for model in panel["models"]
            for stain in GRID["stains"]
        ],
        stores=[LAYOUT.store(panel["test_set"]) for panel in PANELS.values()],
    output:
        [figure(name, ext) for name in FIGURES for ext in config["figures"]["formats"]],
    log:
        LOGS / "figures.log",
    benchmark:
        BENCHMARKS / "figures.tsv"
    threads: 1
    resources:
        **resources("figures", 0),
    params:
        tables=LAYOUT.tables,
        out=LAYOUT.figures,
        settings=settings("figures"),
    shell:
        VSGRID.format(command="figures")
        + " --tables {params.tables:q} --out {params.out:q} > {log:q} 2>&1"
