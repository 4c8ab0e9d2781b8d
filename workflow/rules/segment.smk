# Real-stain masks, once per (test set, stain) and shared by every run on that test set.
# (Each run segments its own prediction in the evaluate rule.)


rule segment_real:
    input:
        store=LAYOUT.store("{test_set}"),
    output:
        directory(LAYOUT.masks("{test_set}", "{stain}")),
    params:
        configs=CONFIG_ARGS,
        settings=settings("segmentation"),
    wildcard_constraints:
        stain="|".join(s for s in GRID["stains"] if s in SEGMENTED),
    log:
        LOGS / "segment_real" / "{test_set}.{stain}.log",
    benchmark:
        BENCHMARKS / "segment_real" / "{test_set}.{stain}.tsv"
    threads: 1
    resources:
        gpu=gpu(CELLPOSE),
        mem_mb=lambda wc, attempt: 8000 * attempt,
        runtime=lambda wc, attempt: 240 * attempt,
    shell:
        "vsgrid segment --config {params.configs} --test-set {wildcards.test_set} --stain {wildcards.stain}"
        " --out {output} > {log} 2>&1"
