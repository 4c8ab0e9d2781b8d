# One Pix2PixHD per (train set, stain, seed). A rerun after a failure or a time limit resumes
# from the model folder's last.pt, which is not an output and so survives the failed job: a
# training longer than a job's time limit runs as a chain of retries (vsgrid.resources.train_retries;
# `vsgrid train-plan` shows it), and one that ends a job without finishing an epoch fails instead.


rule train:
    input:
        store=lambda wc: LAYOUT.store(MODELS[wc.model].train_set),
    output:
        LAYOUT.model_dir("{model}") / "summary.json",
        # An output so that a deleted one replans the job, which rewrites it from last.pt.
        LAYOUT.model_dir("{model}") / "best.pt",
    log:
        LOGS / "train" / "{model}.log",
    benchmark:
        BENCHMARKS / "train" / "{model}.tsv"
    # Training is the longest chain (train -> infer -> evaluate, tables): start every model
    # first, so that no training is left for the end when the other work has run out.
    priority: 1
    retries: train_retries(config)
    threads: config["train"]["workers"] + 1
    resources:
        **resources("train", TRAIN_IMAGES, TRAIN_PIXELS),
        gpu=1,
    params:
        out=lambda wc: LAYOUT.model_dir(wc.model),
        train_set=lambda wc: MODELS[wc.model].train_set.name,
        stain=model_stain,
        seed=lambda wc: MODELS[wc.model].seed,
        settings=settings("network", "train", "device"),
    shell:
        TORCH_THREADS
        + VSGRID.format(command="train")
        + " --train-set {params.train_set:q} --stain {params.stain:q}"
        " --seed {params.seed:q} --out {params.out:q} --quiet > {log:q} 2>&1"


# Every model's generator, what inference (and `vsgrid export`, `vsgrid ood`) loads: `snakemake
# models` trains the grid and nothing else, and as a target of `all` it makes a plain run restore a
# lost best.pt (Snakemake reruns a job for a missing output only when a target or a job that runs
# needs that output).
rule models:
    input:
        [LAYOUT.model_dir(model) / "best.pt" for model in MODELS],
