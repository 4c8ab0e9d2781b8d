# One store per (cell type, phenotype): rendered by the synthetic generator or ingested from plates.


rule store:
    output:
        directory(LAYOUT.store("{data_set}")),
    log:
        LOGS / "store" / "{data_set}.log",
    benchmark:
        BENCHMARKS / "store" / "{data_set}.tsv"
    threads: 2
    resources:
        **resources("store", sum(SPLITS.values())),
    params:
        out=LAYOUT.data,
        settings=settings("data"),
    shell:
        VSGRID.format(command=config["data"]["source"].replace("synthetic", "synthesize"))
        + " --data-set {wildcards.data_set:q} --out {params.out:q} --quiet --no-summary > {log:q} 2>&1"
