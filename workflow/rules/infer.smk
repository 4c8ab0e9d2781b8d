# One prediction per run (model x test set), written as a Zarr array aligned with the test split.


rule infer:
    input:
        model=LAYOUT.model_dir("{model}") / "summary.json",
        store=LAYOUT.store("{test_set}"),
    output:
        directory(LAYOUT.prediction("{model}", "{test_set}")),
    params:
        model=lambda wc: LAYOUT.model_dir(wc.model),
        run=run_of,
        settings=settings("infer", "device"),
    log:
        LOGS / "infer" / "{model}" / "{test_set}.log",
    benchmark:
        BENCHMARKS / "infer" / "{model}" / "{test_set}.tsv"
    threads: 1
    resources:
        gpu=1,
        mem_mb=lambda wc, attempt: 8000 * attempt,
        runtime=lambda wc, attempt: 120 * attempt,
    shell:
        VSGRID.format(command="infer") + " --model {params.model:q} --test-set {wildcards.test_set:q}"
        " --out {output:q} --quiet > {log:q} 2>&1"
