# One evaluation per run, on CPUs: the prediction's features, and its scores at the three levels.


rule evaluate:
    input:
        unpack(run_inputs),
        store=LAYOUT.store("{test_set}"),
        predictions=LAYOUT.predictions("{model}"),
    output:
        [LAYOUT.run_table("{model}", "{test_set}", name) for name in RUN_TABLES],
    log:
        LOGS / "evaluate" / "{model}" / "{test_set}.log",
    benchmark:
        BENCHMARKS / "evaluate" / "{model}" / "{test_set}.tsv"
    threads: FEATURE_WORKERS
    resources:
        **resources("evaluate", SPLITS["test"]),
    params:
        out=lambda wc: LAYOUT.run_dir(wc.model, wc.test_set),
        prediction=lambda wc: LAYOUT.prediction(wc.model, wc.test_set),
        stain=model_stain,
        settings=settings("features", "evaluation"),
    shell:
        VSGRID.format(command="evaluate")
        + " --test-set {wildcards.test_set:q} --stain {params.stain:q} --model {wildcards.model:q}"
        " --prediction {params.prediction:q} --real-masks {input.real_masks:q} --real-features {input.real_features:q}"
        " --ranking {input.ranking:q} --workers {threads} --out {params.out:q} > {log:q} 2>&1"


# Where a model type has two seeds or more: per test image, how far its seeds' predictions disagree
# (an uncertainty of the trust table, checked there against the runs' errors).


rule seed_spread:
    input:
        predictions=lambda wc: [
            LAYOUT.predictions(run.model) for run in SEED_GROUPS[(wc.model_type, wc.test_set)]
        ],
    output:
        LAYOUT.seed_spread("{model_type}", "{test_set}"),
    log:
        LOGS / "seed_spread" / "{model_type}" / "{test_set}.log",
    benchmark:
        BENCHMARKS / "seed_spread" / "{model_type}" / "{test_set}.tsv"
    threads: 1
    resources:
        **resources(
            "seed_spread",
            lambda wc: SPLITS["test"] * len(SEED_GROUPS[(wc.model_type, wc.test_set)]),
        ),
    shell:
        VSGRID.format(command="seed-spread")
        + " --model-type {wildcards.model_type:q} --test-set {wildcards.test_set:q}"
        " --out {output:q} > {log:q} 2>&1"


# The OOD score's no-model baseline: each data set's BF texture statistics, once (its test fields,
# and the training fields a reference reads), for the trust table.


rule bf_texture:
    input:
        LAYOUT.store("{test_set}"),
    output:
        LAYOUT.bf_texture("{test_set}"),
    log:
        LOGS / "bf_texture" / "{test_set}.log",
    benchmark:
        BENCHMARKS / "bf_texture" / "{test_set}.tsv"
    threads: 1
    resources:
        **resources("bf_texture", SPLITS["test"] + SPLITS["train"]),
    params:
        settings=settings("infer.ood_train_fields"),
    shell:
        VSGRID.format(command="bf-texture")
        + " --test-set {wildcards.test_set:q} --out {output:q} --quiet > {log:q} 2>&1"
