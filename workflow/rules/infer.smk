# One job per model: its generator, loaded once, predicts every test set the grid runs it on (with
# each field's OOD score and, with infer.tta, each pixel's spread), and for dapi and fitc the
# segmentation backend (Cellpose on the GPU) segments each prediction.


rule infer:
    input:
        model=LAYOUT.model_dir("{model}") / "summary.json",
        # the generator inference loads: an input, so that a lost one replans its training
        generator=LAYOUT.model_dir("{model}") / "best.pt",
        stores=lambda wc: [LAYOUT.store(test_set) for test_set in TEST_SETS_OF[wc.model]],
        # every prediction's OOD score is measured against the training fields of this store
        train_store=lambda wc: LAYOUT.store(MODELS[wc.model].train_set),
    output:
        directory(LAYOUT.predictions("{model}")),
    log:
        LOGS / "infer" / "{model}.log",
    benchmark:
        BENCHMARKS / "infer" / "{model}.tsv"
    threads: config["infer"]["threads"]
    resources:
        **resources("infer", lambda wc: SPLITS["test"] * len(TEST_SETS_OF[wc.model])),
        gpu=1,
    params:
        model=lambda wc: LAYOUT.model_dir(wc.model),
        test_sets=lambda wc: TEST_SETS_OF[wc.model],
        settings=settings("network", "infer", "device", "segmentation"),
    shell:
        TORCH_THREADS
        + VSGRID.format(command="infer")
        + " --model {params.model:q} --test-set {params.test_sets:q}"
        " --out {output:q} --quiet > {log:q} 2>&1"
