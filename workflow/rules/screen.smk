# Level 4 (evaluation.screen): each cell type's held-out plates predicted whole, profiled per well
# from real and virtual stains, and compared as a screen decides (EC50s, hit calls, Z').
# Every rule here has training's priority: the chain ends in screen_tables, after the last screen
# run, and left until the grid's evaluations are done it ran alone on one core at the end.


rule screen_store:
    output:
        directory(LAYOUT.screen_store("{cell_type}")),
    log:
        LOGS / "screen_store" / "{cell_type}.log",
    benchmark:
        BENCHMARKS / "screen_store" / "{cell_type}.tsv"
    priority: 1
    threads: 2
    resources:
        **resources("store", SCREEN_IMAGES + FOREST_IMAGES),
    params:
        settings=settings(
            "data",
            "evaluation.screen.fields_per_well",
            "evaluation.screen.compounds",
            "evaluation.screen.forest_fields",
        ),
    shell:
        VSGRID.format(command="screen-store")
        + " --cell-type {wildcards.cell_type:q} --workers {threads} --quiet > {log:q} 2>&1"


rule infer_screen:
    input:
        model=LAYOUT.model_dir("{model}") / "summary.json",
        # the generator inference loads: an input, so that a lost one replans its training
        generator=LAYOUT.model_dir("{model}") / "best.pt",
        stores=screen_stores,
        train_store=lambda wc: LAYOUT.store(MODELS[wc.model].train_set),
    output:
        directory(LAYOUT.screen_predictions("{model}")),
    log:
        LOGS / "infer_screen" / "{model}.log",
    benchmark:
        BENCHMARKS / "infer_screen" / "{model}.tsv"
    priority: 1
    threads: config["infer"]["threads"]
    resources:
        **resources("infer", SCREEN_IMAGES * len(GRID["cell_types"])),
        gpu=1,
    params:
        model=lambda wc: LAYOUT.model_dir(wc.model),
        cell_types=screened_cell_types,
        # a screen's predictions carry no TTA: of infer's settings, only these shape them
        settings=settings(
            "network", "infer.batch_size", "infer.ood_train_fields", "device", "segmentation"
        ),
    shell:
        TORCH_THREADS
        + VSGRID.format(command="infer")
        + " --model {params.model:q} --screen {params.cell_types:q}"
        " --out {output:q} --quiet > {log:q} 2>&1"


rule segment_screen:
    input:
        store=LAYOUT.screen_store("{cell_type}"),
    output:
        masks=directory(LAYOUT.screen_masks("{cell_type}", "{stain}")),
        # The phenotype forest's training fields (the screen store's control wells of other
        # plates), segmented here on the GPU so that screen_reference only measures and fits.
        forest_masks=directory(LAYOUT.screen_forest_masks("{cell_type}", "{stain}")),
    log:
        LOGS / "segment_screen" / "{cell_type}.{stain}.log",
    benchmark:
        BENCHMARKS / "segment_screen" / "{cell_type}.{stain}.tsv"
    wildcard_constraints:
        stain="|".join(s for s in GRID["stains"] if s in SEGMENTED),
    priority: 1
    threads: 1
    resources:
        **resources("segment_real", SCREEN_IMAGES + FOREST_IMAGES),
        gpu=gpu(CELLPOSE),
    params:
        settings=settings("segmentation", "evaluation"),
    shell:
        VSGRID.format(command="screen-segment")
        + " --cell-type {wildcards.cell_type:q} --stain {wildcards.stain:q}"
        " --masks {output.masks:q} --forest-masks {output.forest_masks:q} > {log:q} 2>&1"


rule screen_reference:
    input:
        store=LAYOUT.screen_store("{cell_type}"),
        masks=lambda wc: LAYOUT.screen_masks(wc.cell_type, masks_stain(wc.stain)),
        forest_masks=lambda wc: LAYOUT.screen_forest_masks(wc.cell_type, masks_stain(wc.stain)),
        ranking=LAYOUT.ranking("{cell_type}", "{stain}"),
    output:
        wells=LAYOUT.screen_real_wells("{cell_type}", "{stain}"),
        forest=LAYOUT.screen_forest("{cell_type}", "{stain}"),
    log:
        LOGS / "screen_reference" / "{cell_type}.{stain}.log",
    benchmark:
        BENCHMARKS / "screen_reference" / "{cell_type}.{stain}.tsv"
    priority: 1
    threads: FEATURE_WORKERS
    resources:
        **resources("evaluate", SCREEN_IMAGES + FOREST_IMAGES),
    params:
        settings=settings("features", "evaluation", "evaluation.screen.readouts", "segmentation"),
    shell:
        VSGRID.format(command="screen-reference")
        + " --cell-type {wildcards.cell_type:q} --stain {wildcards.stain:q} --masks {input.masks:q}"
        " --forest-masks {input.forest_masks:q} --ranking {input.ranking:q}"
        " --wells {output.wells:q} --forest {output.forest:q} --workers {threads} > {log:q} 2>&1"


# Level 4's controls of a screen and stain (vsgrid.screen.controls): the real stain with noise,
# blurred, and with noise under a per-plate gain and offset, in the real masks; no GPU, no model.
rule screen_controls:
    input:
        store=LAYOUT.screen_store("{cell_type}"),
        # cy5's controls carry no masks (screen_run measures them in the real nuclei)
        masks=lambda wc: LAYOUT.screen_masks(wc.cell_type, masks_stain(wc.stain)),
    output:
        [
            directory(
                LAYOUT.screen_prediction(vsgrid_grid.ScreenControl(c, "{stain}"), "{cell_type}")
            )
            for c in vsgrid_grid.screen_controls(config)
        ],
    log:
        LOGS / "screen_controls" / "{cell_type}.{stain}.log",
    benchmark:
        BENCHMARKS / "screen_controls" / "{cell_type}.{stain}.tsv"
    priority: 1
    threads: 1
    resources:
        **resources("segment_real", SCREEN_IMAGES),
    params:
        settings=settings(
            "evaluation.screen.controls", "evaluation.seed", "evaluation.block_images"
        ),
    shell:
        VSGRID.format(command="screen-controls")
        + " --cell-type {wildcards.cell_type:q} --stain {wildcards.stain:q}"
        " --masks {input.masks:q} --out {output:q} > {log:q} 2>&1"


rule screen_run:
    input:
        unpack(screen_run_inputs),
    output:
        LAYOUT.screen_wells("{model}", "{cell_type}"),
    log:
        LOGS / "screen_run" / "{model}" / "{cell_type}.log",
    benchmark:
        BENCHMARKS / "screen_run" / "{model}" / "{cell_type}.tsv"
    wildcard_constraints:
        model="|".join(re.escape(m) for m in SCREEN_MODELS) or "NONE",
    priority: 1
    threads: FEATURE_WORKERS
    resources:
        **resources("evaluate", SCREEN_IMAGES),
    params:
        prediction=lambda wc: LAYOUT.screen_prediction(wc.model, wc.cell_type),
        stain=lambda wc: screen_model(wc.model).stain,
        settings=settings("features", "evaluation", "evaluation.screen.readouts"),
    shell:
        VSGRID.format(command="screen-run")
        + " --cell-type {wildcards.cell_type:q} --stain {params.stain:q} --model {wildcards.model:q}"
        " --prediction {params.prediction:q} --reference {input.reference:q} --forest {input.forest:q}"
        " --nuclei {input.nuclei:q} --out {output:q} --workers {threads} > {log:q} 2>&1"


rule screen_tables:
    input:
        real=[
            LAYOUT.screen_real_wells(c, s)
            for c, s in sorted({(r.cell_type, r.model.stain) for r in SCREEN_RUNS})
        ],
        runs=[LAYOUT.screen_wells(r.model, r.cell_type) for r in CONTROL_RUNS + SCREEN_RUNS],
    output:
        [LAYOUT.table(name, fmt) for name in SCREEN_TABLES for fmt in TABLE_FORMATS],
        LAYOUT.tables / SCREEN_OUTCOME,
    log:
        LOGS / "screen_tables.log",
    benchmark:
        BENCHMARKS / "screen_tables.tsv"
    priority: 1
    threads: 1
    resources:
        **resources("screen_tables", SCREEN_GROUPS, REFERENCE_PIXELS),
    params:
        out=LAYOUT.tables,
        settings=settings("evaluation", "evaluation.screen", "data"),
    shell:
        VSGRID.format(command="screen-tables") + " --out {params.out:q} > {log:q} 2>&1"


rule screen_figures:
    input:
        tables=[LAYOUT.table(name) for name in ("screen", "screen_verdicts", "screen_trust")],
        wells=rules.screen_tables.input,
    output:
        [figure(name, ext) for name in SCREEN_FIGURES for ext in config["figures"]["formats"]],
    log:
        LOGS / "screen_figures.log",
    benchmark:
        BENCHMARKS / "screen_figures.tsv"
    priority: 1
    threads: 1
    resources:
        **resources("figures", 0),
    params:
        tables=LAYOUT.tables,
        out=LAYOUT.figures,
        settings=settings("figures", "evaluation.screen"),
    shell:
        VSGRID.format(command="screen-figures")
        + " --tables {params.tables:q} --out {params.out:q} > {log:q} 2>&1"
