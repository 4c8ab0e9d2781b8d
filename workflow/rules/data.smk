# One store per (cell type, phenotype): rendered by the synthetic generator or ingested from plates.


rule store:
    output:
        directory(LAYOUT.store("{data_set}")),
    params:
        command=config["data"]["source"].replace("synthetic", "synthesize"),
        configs=CONFIG_ARGS,
        settings=settings("data"),
    log:
        LOGS / "store" / "{data_set}.log",
    benchmark:
        BENCHMARKS / "store" / "{data_set}.tsv"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=120,
    shell:
        "vsgrid {params.command} --config {params.configs} --data-set {wildcards.data_set}"
        " --out $(dirname {output}) --quiet --no-summary > {log} 2>&1"
