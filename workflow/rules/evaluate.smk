# One evaluation per run: segment and measure the prediction, score it at the three levels.


rule evaluate:
    input:
        unpack(run_inputs),
        store=LAYOUT.store("{test_set}"),
        prediction=LAYOUT.prediction("{model}", "{test_set}"),
    output:
        scores=LAYOUT.run_dir("{model}", "{test_set}") / "scores.parquet",
        images=LAYOUT.run_dir("{model}", "{test_set}") / "images.parquet",
        differences=LAYOUT.run_dir("{model}", "{test_set}") / "feature_differences.parquet",
        features=LAYOUT.run_dir("{model}", "{test_set}") / "features.parquet",
    params:
        configs=CONFIG_ARGS,
        stain=model_stain,
        settings=settings("segmentation", "features", "evaluation"),
    log:
        LOGS / "evaluate" / "{model}" / "{test_set}.log",
    benchmark:
        BENCHMARKS / "evaluate" / "{model}" / "{test_set}.tsv"
    threads: 1
    resources:
        gpu=lambda wc: gpu(CELLPOSE and model_stain(wc) in SEGMENTED),
        mem_mb=lambda wc, attempt: 8000 * attempt,
        runtime=lambda wc, attempt: 240 * attempt,
    shell:
        "vsgrid evaluate --config {params.configs} --test-set {wildcards.test_set} --stain {params.stain}"
        " --prediction {input.prediction} --real-masks {input.real_masks} --real-features {input.real_features}"
        " --ranking {input.ranking} --workers {threads} --out $(dirname {output.scores}) > {log} 2>&1"
