# Every run's scores into tidy tables with deltas against the baselines (Parquet and CSV).

TABLES = ["runs", "deltas", "deltas_pixel", "deltas_instance", "deltas_feature", "tasks", "features"]


rule tables:
    input:
        [run_path(run, name) for run in RUNS for name in ("scores.parquet", "images.parquet", "feature_differences.parquet")],
    output:
        expand("{results}/tables/{table}.{ext}", results=RESULTS, table=TABLES, ext=("parquet", "csv")),
    params:
        configs=CONFIG_ARGS,
        out=lambda wc, output: Path(output[0]).parent,
        settings=settings("evaluation"),
    log:
        f"{LOGS}/tables.log",
    benchmark:
        f"{BENCHMARKS}/tables.tsv"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 8000 * attempt,
        runtime=lambda wc, attempt: 120 * attempt,
    shell:
        "vsgrid tables --config {params.configs} --out {params.out} > {log} 2>&1"
