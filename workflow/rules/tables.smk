# Every run's scores into tidy tables with deltas against the baselines (Parquet and CSV), and the
# trust table: what the models say of their predictions, checked against the real stain.


rule tables:
    input:
        runs=[
            LAYOUT.run_table(run.model, run.test_set, name)
            for run in RUNS
            for name in ("scores", "images", "feature_differences", "cells")
        ],
        stores=[LAYOUT.store(d) for d in vsgrid_grid.data_sets(GRID)],  # the wells and plates of the test images
        seeds=[LAYOUT.seed_spread(model_type, test_set) for model_type, test_set in SEED_GROUPS],
        bf_texture=[LAYOUT.bf_texture(test_set) for test_set in DATA_SETS],
    output:
        [LAYOUT.table(name, fmt) for name in (*GRID_TABLES, TRUST_TABLE) for fmt in TABLE_FORMATS],
        LAYOUT.tables / OUTCOME,
    log:
        LOGS / "tables.log",
    benchmark:
        BENCHMARKS / "tables.tsv"
    threads: 1
    resources:
        **resources("tables", len(RUNS) * SPLITS["test"], REFERENCE_PIXELS),
    params:
        out=LAYOUT.tables,
        settings=settings("evaluation"),
    shell:
        VSGRID.format(command="tables") + " --out {params.out:q} > {log:q} 2>&1"
