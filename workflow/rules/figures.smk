# The paper's figures from the tables (and, for the panels, a few predictions).
# `snakemake figures` redraws them; a change to the figures section of the config reruns only this.



rule figures:
    input:
        tables=f"{RESULTS}/tables/deltas.parquet",
        features=f"{RESULTS}/tables/features.parquet",
        predictions=[
            f"{RESULTS}/runs/{model.format(stain=stain)}/{panel['test_set']}/prediction.zarr"
            for panel in PANELS.values()
            for model in panel["models"]
            for stain in GRID["stains"]
        ],
        stores=[f"{DATA}/{panel['test_set']}.zarr" for panel in PANELS.values()],
    output:
        [figure(name, ext) for name in FIGURES for ext in config["figures"]["formats"]],
    params:
        configs=CONFIG_ARGS,
        out=lambda wc, output: Path(output[0]).parent,
        settings=settings("figures"),
    log:
        f"{LOGS}/figures.log",
    benchmark:
        f"{BENCHMARKS}/figures.tsv"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=lambda wc, attempt: 30 * attempt,
    shell:
        "vsgrid figures --config {params.configs} --tables $(dirname {input.tables}) --out {params.out} > {log} 2>&1"
