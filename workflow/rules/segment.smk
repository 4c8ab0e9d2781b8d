# Real-stain masks, once per (test set, stain) and shared by every run on that test set.
# (Predictions are segmented in their model's inference job.)


rule segment_real:
    input:
        store=LAYOUT.store("{test_set}"),
    output:
        directory(LAYOUT.masks("{test_set}", "{stain}")),
    log:
        LOGS / "segment_real" / "{test_set}.{stain}.log",
    benchmark:
        BENCHMARKS / "segment_real" / "{test_set}.{stain}.tsv"
    wildcard_constraints:
        stain="|".join(s for s in GRID["stains"] if s in SEGMENTED),
    threads: 1
    resources:
        **resources("segment_real", SPLITS["test"]),
        gpu=gpu(CELLPOSE),
    params:
        settings=settings("segmentation", "evaluation"),
    shell:
        VSGRID.format(command="segment")
        + " --test-set {wildcards.test_set:q} --stain {wildcards.stain:q}"
        " --out {output:q} > {log:q} 2>&1"
