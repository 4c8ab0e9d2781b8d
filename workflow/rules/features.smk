# Real-stain features, once per (test set, stain), and the feature ranking once per (cell type, stain).


rule features_real:
    input:
        store=LAYOUT.store("{test_set}"),
        masks=lambda wc: LAYOUT.real_masks(wc.test_set, wc.stain),
    output:
        LAYOUT.real_features("{test_set}", "{stain}"),
    params:
        configs=CONFIG_ARGS,
        settings=settings("features"),
    log:
        LOGS / "features_real" / "{test_set}.{stain}.log",
    benchmark:
        BENCHMARKS / "features_real" / "{test_set}.{stain}.tsv"
    threads: 2
    resources:
        mem_mb=lambda wc, attempt: 8000 * attempt,
        runtime=lambda wc, attempt: 240 * attempt,
    shell:
        "vsgrid measure --config {params.configs} --test-set {wildcards.test_set} --stain {wildcards.stain}"
        " --masks {input.masks} --workers {threads} --out {output} --quiet > {log} 2>&1"


rule rank_features:
    input:
        unpack(ranking_inputs),
    output:
        LAYOUT.ranking("{cell_type}", "{stain}"),
    params:
        configs=CONFIG_ARGS,
        inputs=lambda wc, input: " ".join(f"{name}={path}" for name, path in input.items()),
        settings=settings("evaluation"),
    log:
        LOGS / "rank_features" / "{cell_type}.{stain}.log",
    benchmark:
        BENCHMARKS / "rank_features" / "{cell_type}.{stain}.tsv"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 8000 * attempt,
        runtime=lambda wc, attempt: 60 * attempt,
    shell:
        "vsgrid rank-features --config {params.configs} --inputs {params.inputs} --out {output} > {log} 2>&1"
