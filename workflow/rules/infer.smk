# One job per model: its generator, loaded once, predicts every test set the grid runs it on,
# and for dapi and fitc the segmentation backend (Cellpose on the GPU) segments each prediction.


rule infer:
    input:
        model=LAYOUT.model_dir("{model}") / "summary.json",
        stores=lambda wc: [LAYOUT.store(test_set) for test_set in TEST_SETS_OF[wc.model]],
    output:
        directory(LAYOUT.predictions("{model}")),
    params:
        model=lambda wc: LAYOUT.model_dir(wc.model),
        test_sets=lambda wc: TEST_SETS_OF[wc.model],
        settings=settings("network", "infer", "device", "segmentation"),
    log:
        LOGS / "infer" / "{model}.log",
    benchmark:
        BENCHMARKS / "infer" / "{model}.tsv"
    threads: config["infer"]["threads"]
    resources:
        gpu=1,
        **resources("infer", lambda wc: SPLITS["test"] * len(TEST_SETS_OF[wc.model])),
    shell:
        TORCH_THREADS + VSGRID.format(command="infer") + " --model {params.model:q} --test-set {params.test_sets:q}"
        " --out {output:q} --quiet > {log:q} 2>&1"
