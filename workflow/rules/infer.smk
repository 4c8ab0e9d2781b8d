# One prediction per run (model x test set), written as a Zarr array aligned with the test split.


rule infer:
    input:
        model=f"{RESULTS}/models/{{model}}/summary.json",
        store=f"{DATA}/{{test_set}}.zarr",
    output:
        directory(f"{RESULTS}/runs/{{model}}/{{test_set}}/prediction.zarr"),
    params:
        configs=CONFIG_ARGS,
        settings=settings("infer"),
    log:
        f"{LOGS}/infer/{{model}}/{{test_set}}.log",
    benchmark:
        f"{BENCHMARKS}/infer/{{model}}/{{test_set}}.tsv"
    threads: 1
    resources:
        gpu=1,
        mem_mb=lambda wc, attempt: 8000 * attempt,
        runtime=lambda wc, attempt: 120 * attempt,
    shell:
        "vsgrid infer --config {params.configs} --model $(dirname {input.model}) --test-set {wildcards.test_set}"
        " --out {output} --quiet > {log} 2>&1"
