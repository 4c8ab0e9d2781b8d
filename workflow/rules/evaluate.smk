# One evaluation per run: segment and measure the prediction, score it at the three levels.


rule evaluate:
    input:
        store=f"{DATA}/{{test_set}}.zarr",
        prediction=f"{RESULTS}/runs/{{model}}/{{test_set}}/prediction.zarr",
        real_masks=lambda wc: real_masks_path(wc.test_set, model_stain(wc)),
        real_features=lambda wc: f"{RESULTS}/reference/{wc.test_set}/{model_stain(wc)}.features.parquet",
        ranking=lambda wc: ranking_path(wc.test_set, model_stain(wc)),
    output:
        scores=f"{RESULTS}/runs/{{model}}/{{test_set}}/scores.parquet",
        images=f"{RESULTS}/runs/{{model}}/{{test_set}}/images.parquet",
        differences=f"{RESULTS}/runs/{{model}}/{{test_set}}/feature_differences.parquet",
        features=f"{RESULTS}/runs/{{model}}/{{test_set}}/features.parquet",
    params:
        configs=CONFIG_ARGS,
        stain=model_stain,
        settings=settings("segmentation", "features", "evaluation"),
    log:
        f"{LOGS}/evaluate/{{model}}/{{test_set}}.log",
    benchmark:
        f"{BENCHMARKS}/evaluate/{{model}}/{{test_set}}.tsv"
    threads: 1
    resources:
        gpu=lambda wc: gpu(CELLPOSE and model_stain(wc) in SEGMENTED),
        mem_mb=lambda wc, attempt: 8000 * attempt,
        runtime=lambda wc, attempt: 240 * attempt,
    shell:
        "vsgrid evaluate --config {params.configs} --test-set {wildcards.test_set} --stain {params.stain}"
        " --prediction {input.prediction} --real-masks {input.real_masks} --real-features {input.real_features}"
        " --ranking {input.ranking} --workers {threads} --out $(dirname {output.scores}) > {log} 2>&1"
