# One prediction per run (model x test set), written as a Zarr array aligned with the test split.


rule infer:
    input:
        model=LAYOUT.model_dir("{model}") / "summary.json",
        store=LAYOUT.store("{test_set}"),
    output:
        directory(LAYOUT.prediction("{model}", "{test_set}")),
    params:
        configs=CONFIG_ARGS,
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
        "vsgrid infer --config {params.configs} --model $(dirname {input.model}) --test-set {wildcards.test_set}"
        " --out {output} --quiet > {log} 2>&1"
