# Real-stain features, once per (test set, stain), and the feature ranking once per (cell type, stain).


rule features_real:
    input:
        store=LAYOUT.store("{test_set}"),
        masks=lambda wc: LAYOUT.real_masks(wc.test_set, wc.stain),
    output:
        LAYOUT.real_features("{test_set}", "{stain}"),
    log:
        LOGS / "features_real" / "{test_set}.{stain}.log",
    benchmark:
        BENCHMARKS / "features_real" / "{test_set}.{stain}.tsv"
    threads: FEATURE_WORKERS
    resources:
        **resources("features_real", SPLITS["test"]),
    params:
        settings=settings("features"),
    shell:
        VSGRID.format(command="measure")
        + " --test-set {wildcards.test_set:q} --stain {wildcards.stain:q}"
        " --masks {input.masks:q} --workers {threads} --out {output:q} --quiet > {log:q} 2>&1"


rule rank_features:
    input:
        unpack(ranking_inputs),
    output:
        LAYOUT.ranking("{cell_type}", "{stain}"),
    log:
        LOGS / "rank_features" / "{cell_type}.{stain}.log",
    benchmark:
        BENCHMARKS / "rank_features" / "{cell_type}.{stain}.tsv"
    threads: FEATURE_WORKERS
    resources:
        **resources("rank_features", 0),
    params:
        inputs=lambda wc, input: [f"{name}={path}" for name, path in input.items()],
        settings=settings("evaluation"),
    shell:
        VSGRID.format(command="rank-features")
        + " --inputs {params.inputs:q} --workers {threads} --out {output:q} > {log:q} 2>&1"
