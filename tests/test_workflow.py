"""The Snakemake workflow: the paper grid's plan, the .test grid run for real, partial reruns, bad input."""

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from shared import DATA, RESULTS, ROOT, planned, snakemake

# Every test here runs Snakemake: 5-15 s each on two cores for a dry run of the paper grid, minutes
# for the `grid` fixture's real run. The slow tier.
pytestmark = pytest.mark.slow


def test_paper_grid_plans_54_trainings_and_243_inferences(tmp_path):
    result = snakemake(tmp_path, "-n", "-p", configfile=ROOT / "config" / "config.yaml")
    jobs = planned(tmp_path, configfile=ROOT / "config" / "config.yaml")
    # One infer job per model predicts the test sets of all its runs: 243 inferences in 54 jobs.
    assert jobs["train"] == 54 and jobs["infer"] == 54 and jobs["evaluate"] == 243
    test_sets = re.findall(
        r"vsgrid infer .*--test-set ((?:'?[a-z]+-(?:non)?toxic'? )+)--out", result.stdout
    )
    assert len(test_sets) == 54 and sum(len(t.split()) for t in test_sets) == 243
    # Real-stain work once per test set and stain, the ranking once per cell type and stain.
    assert (
        jobs["segment_real"] == 6 * 2
        and jobs["features_real"] == 6 * 3
        and jobs["rank_features"] == 3 * 3
    )
    assert jobs["store"] == 6 and jobs["tables"] == jobs["figures"] == 1


def test_the_paper_screen_tables_job_asks_for_its_measured_27_groups(tmp_path):
    from vsgrid.resources import MARGIN

    result = snakemake(tmp_path, "-n", "screen_tables", configfile=ROOT / "config" / "config.yaml")
    job = result.stdout[result.stdout.find("rule screen_tables:") :]
    runtime = int(re.search(r"resources: .*runtime=(\d+)", job).group(1))
    assert runtime >= 27 * 61 / 60 * MARGIN  # 27 (screen, stain, seed) groups at 61 s each


def test_a_config_key_given_twice_is_refused_and_config_values_are_typed(tmp_path):
    twice = tmp_path / "twice.yaml"
    twice.write_text("train: {max_epochs: 3}\ntrain: {max_epochs: 4}\n")
    result = snakemake(
        tmp_path, "-n", configfile=[ROOT / ".test" / "config.yaml", twice], check=False
    )
    assert result.returncode != 0 and "key 'train' is given twice" in result.stdout + result.stderr
    config = ROOT / ".test" / "config.yaml"
    snakemake(tmp_path, "-n", "--config", "train={max_epochs: 4}", configfile=config)
    (handed,) = (tmp_path / ".snakemake" / "vsgrid").glob("config-*.json")  # what the jobs read
    assert json.loads(handed.read_text())["train"]["max_epochs"] == 4  # Snakemake's '4', typed


def test_a_nested_config_override_is_typed_and_merges_into_its_section(tmp_path):
    config = ROOT / ".test" / "config.yaml"
    override = (
        "evaluation={screen: {fields_per_well: 2}}"  # one of two schemas: was '2' is not valid
    )
    snakemake(tmp_path, "-n", "--config", override, configfile=config)
    (handed,) = (tmp_path / ".snakemake" / "vsgrid").glob("config-*.json")
    screen = json.loads(handed.read_text())["evaluation"]["screen"]
    assert screen["fields_per_well"] == 2 and screen["compounds"] == 3  # .test's, kept
    nan = "evaluation={screen: {margins: {ec50_error: .nan}}}"
    result = snakemake(tmp_path, "-n", "--config", nan, configfile=config, check=False)
    message = "evaluation.screen.margins.ec50_error: nan is not a finite number"
    assert result.returncode != 0 and message in result.stdout + result.stderr
    twice = tmp_path / "twice.json"
    twice.write_text('{"train": {"max_epochs": 3, "max_epochs": 4}}')
    result = snakemake(tmp_path, "-n", configfile=[config, twice], check=False)
    assert result.returncode != 0 and "key 'max_epochs' is given twice" in result.stdout


def finished_without_running(workdir, configfile):
    """Every output of the workflow, empty and up to date in Snakemake's records: a finished grid
    to plan on in seconds (the `grid` fixture below runs one for real)."""
    summary = snakemake(workdir, "--summary", configfile=configfile).stdout
    for line in summary.splitlines()[1:]:
        path = Path(workdir) / line.split("\t")[0]
        if path.suffix == ".zarr" or path.parent.name == "predictions":  # directory() outputs
            path.mkdir(parents=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
    snakemake(workdir, "--touch", configfile=configfile)
    assert not planned(workdir, configfile=configfile)


def test_a_lost_generator_is_trained_again_before_any_inference_reads_it(tmp_path):
    """best.pt is an input of the rules that load it: a forced inference no longer runs without
    it, and the `models` target restores it (from last.pt) and remakes what its model predicted."""
    config = ROOT / ".test" / "config.yaml"
    finished_without_running(tmp_path, config)
    (tmp_path / "results" / "models" / "lung-nontoxic.dapi.s0" / "best.pt").unlink()
    forced = planned(tmp_path, "--forcerun", "infer", "infer_screen", configfile=config)
    assert forced["train"] == 1 and forced["infer"] == 8 and forced["infer_screen"] == 8
    assert planned(tmp_path, "models", configfile=config) == {"train": 1, "models": 1}


def test_a_plain_run_restores_a_lost_generator_and_remakes_only_its_models_results(tmp_path):
    config = ROOT / ".test" / "config.yaml"
    finished_without_running(tmp_path, config)
    (tmp_path / "results" / "models" / "lung-nontoxic.dapi.s0" / "best.pt").unlink()
    plain = planned(tmp_path, configfile=config)
    assert plain["train"] == plain["infer"] == plain["infer_screen"] == 1
    assert plain["evaluate"] == 4  # the runs of that model (on its 4 test sets), nothing else


def test_the_test_grid_writes_tables_and_figures(grid):
    deltas = pd.read_parquet(grid / RESULTS / "tables" / "deltas.parquet")
    paper = deltas[deltas["baseline_kind"] == "test_distribution"]
    # 12 (train set, test set) pairs x 2 stains; dapi has 14 metrics, cy5 (no level 2) 7, the
    # CRPS of the 2 TTA samples its config keeps among them.
    assert paper.groupby("stain").size().to_dict() == {"dapi": 12 * 14, "cy5": 12 * 7}
    baselines = paper[paper["train_set"] == paper["baseline_train_set"]]
    assert (baselines["delta"].dropna() == 0).all() and len(baselines) == 4 * (14 + 7)
    # The tiny models' DAPI has no instance matching a real one: N-MAE and the CRPS are undefined
    # there, and only there.
    undefined = paper[paper["delta"].isna()]
    matched = paper[paper["metric"] == "match_rate"].set_index(["model_type", "test_set"])["value"]
    assert (
        set(undefined["metric"]) <= {"nmae", "crps"}
        and (matched[undefined.set_index(["model_type", "test_set"]).index] == 0).all()
    )
    defined = paper.dropna(subset=["delta"])
    assert (defined["ci_low"] <= defined["delta"] + 1e-9).all() and (
        defined["delta"] <= defined["ci_high"] + 1e-9
    ).all()
    runs = pd.read_csv(grid / RESULTS / "tables" / "runs.csv")
    assert runs["run"].nunique() == 24 and set(runs["task"]) == {1, 2, 3}
    trust = pd.read_csv(grid / RESULTS / "tables" / "trust.csv")
    # every prediction says how sure it is (TTA spread) and how far out its fields lie (OOD);
    # every shifted run gets the OOD score's AUROC against its model's own test images, and the
    # no-model baseline's (the bf_texture jobs' statistics) beside it; a matched cell's spread
    # over its TTA samples is ranked against its error
    shifted = runs.loc[runs["shift"] != "none", "run"].nunique()
    assert set(trust["uncertainty"]) == {"tta", "ood", "bf texture", "feature spread"}
    assert (trust.loc[trust["uncertainty"] == "feature spread", "error"] == "cell nmae").all()
    crps = paper[(paper["metric"] == "crps") & (paper["stain"] == "cy5")]
    assert len(crps) == 12 and crps["value"].notna().all()
    detect = trust[(trust["statistic"] == "auroc") & (trust["test_set"] != "all")]
    for score in ("ood", "bf texture"):
        found = detect[detect["uncertainty"] == score]
        assert len(found) == shifted and found["value"].between(0, 1).all()
    ranked = trust[(trust["statistic"] == "spearman") & (trust["test_set"] != "all")]
    assert len(ranked[["model", "test_set"]].drop_duplicates()) == 24
    screen = pd.read_csv(grid / RESULTS / "tables" / "screen.csv")
    sentinels = pd.read_csv(grid / RESULTS / "tables" / "screen_trust.csv")
    # every screen run (4 non-toxic-trained models, 4 trained on both phenotypes, and 3 controls
    # per stain) at every k of the default list, and a model's flip AUROC row (a control has no
    # OOD score: random sentinels, no flips)
    per_run = sentinels.groupby("model")["k"].agg(lambda k: sorted(set(k.dropna())))
    assert len(per_run) == 8 + 3 * 2 and all(k == [0, 8, 16, 32, 64] for k in per_run)
    flips = sentinels[sentinels["k"].isna()]
    assert (flips["metric"] == "flip_auroc").all() and flips["control"].isna().all()
    assert set(sentinels.loc[sentinels["control"].notna(), "choice"].dropna()) == {"random"}
    assert (sentinels["value"].notna() | sentinels["reason"].notna()).all()
    outcome = (grid / RESULTS / "tables" / "screen_outcome.txt").read_text()
    said = outcome.split("Sentinel wells (k per plate stained for real")[1].splitlines()[1:]
    models = [line for line in said if not line.startswith("control-")]
    assert len(said) == 12 + 12 and all("replaceable" in line for line in said)
    assert len(models) == 12 and all("flip AUROC" in line for line in models)
    # each screen's model types ranked, a both-phenotype model type on its own screen only
    ranked = outcome.split("best first (summary readout, mean over seeds):")[1].split("\n\n")[0]
    lung_dapi = [line for line in ranked.splitlines() if line.split()[:2] == ["lung", "dapi"]]
    assert len(lung_dapi) == 2 and all("lung-both.dapi" in line for line in lung_dapi)
    assert "breast-both" not in "".join(lung_dapi) and "control-" not in ranked
    # 4 non-toxic models on 2 screens, 2 both-phenotype models on their own, and 3 controls, per
    # stain; dapi reads cell count, phenotype score and its cell type's 5 selected features, cy5
    # the last 6; each has its profile's rows
    readouts = screen.groupby(["cell_type", "stain"])["readout"].nunique()
    assert (
        screen["model"].nunique() == 8 + 3 * 2
        and set(readouts[:, "dapi"]) == {8}
        and set(readouts[:, "cy5"]) == {7}
        and (
            screen.groupby(["cell_type", "stain"])["readout"].agg(set).map({"profile"}.issubset)
        ).all()
    )
    assert (
        screen["value"].notna() | screen["reason"].notna()
    ).all()  # a missing metric always says why
    assert (screen.loc[screen["is_baseline"] & screen["delta"].notna(), "delta"] == 0).all()
    for name in (
        "figure2",
        "figure3",
        "figure4",
        "figure5",
        "figure6a",
        "figure6b",
        "figure10a",
        "figure10b",
        "figure7",
        "figure8",
        "figure9",
        "figure11",
    ):
        assert (grid / RESULTS / "figures" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert planned(grid) == {}  # nothing left to do
    log = (grid / RESULTS / "logs" / "train" / "lung-nontoxic.dapi.s0.log").read_text()
    assert "reached max_epochs (2)" in log
    benchmark = pd.read_csv(
        grid / RESULTS / "benchmarks" / "train" / "lung-nontoxic.dapi.s0.tsv", sep="\t"
    )
    assert {"s", "max_rss", "cpu_time"} <= set(benchmark.columns)


def test_the_report_holds_every_figure_with_its_caption(grid, tmp_path):
    """What `make quick` runs after the grid: Snakemake's report, each PNG with its caption."""
    from vsgrid.layout import GRID_FIGURES, SCREEN_FIGURES

    report = tmp_path / "report.html"
    snakemake(grid, "--report", str(report))
    text = report.read_text()
    for name in (*GRID_FIGURES, *SCREEN_FIGURES):
        caption = (ROOT / "workflow" / "report" / f"{name}.rst").read_text()
        title = re.match(r"\*\*(.+?)\*\*", caption).group(1).split("\n")[0]
        assert f'"{name}.png"' in text and title in text, name


def test_every_job_log_ends_with_its_cpu_time(grid):
    """bench/jobs.py sums these lines: Snakemake's benchmark files miss the end of a job's CPU."""
    logs = sorted((grid / RESULTS / "logs").rglob("*.log"))
    benchmarks = sorted((grid / RESULTS / "benchmarks").rglob("*.tsv"))
    assert len(logs) == len(benchmarks) > 50
    for log in logs:
        last = log.read_text().splitlines()[-1]
        assert re.search(
            r" vsgrid [a-z-]+: [\d.]+ s of CPU with its worker processes, peak memory \d+ MB in its main process$",
            last,
        ), f"{log}: {last}"


def test_paths_with_spaces_and_shell_syntax_are_quoted_never_run(grid):
    assert (grid / DATA / "lung-toxic.zarr" / "zarr.json").is_file()
    assert not list(grid.rglob("pwned")) and not (grid / "my").exists()


def test_one_runs_result_computes_only_that_cell(grid, tmp_path):
    work = tmp_path / "copy"
    shutil.copytree(grid, work, symlinks=True)
    for folder in ("models", "predictions", "runs"):
        shutil.rmtree(work / RESULTS / folder / "breast-toxic.cy5.s0")
    target = f"{RESULTS}/runs/breast-toxic.cy5.s0/lung-toxic/scores.parquet"
    assert planned(work, target) == {"train": 1, "infer": 1, "evaluate": 1}


def test_forcing_one_model_reruns_only_its_downstream(grid):
    jobs = planned(grid, "--forcerun", f"{RESULTS}/models/lung-nontoxic.dapi.s0/summary.json")
    # The model, its predictions (one job) and its 4 runs (lung/breast x non-toxic/toxic), the tables and the
    # figures; and its screen predictions (one job), its 2 screen runs, the screen tables and figures.
    assert jobs == {
        "train": 1,
        "infer": 1,
        "evaluate": 4,
        "tables": 1,
        "figures": 1,
        "all": 1,
        "infer_screen": 1,
        "screen_run": 2,
        "screen_tables": 1,
        "screen_figures": 1,
    }


def test_a_second_seed_adds_its_models_and_the_spread_over_seeds(grid, tmp_path):
    overlay = tmp_path / "seeds.yaml"
    overlay.write_text("grid: {stain_seeds: {dapi: [0, 1]}}\n")
    jobs = planned(grid, configfile=[grid / "config.yaml", overlay])
    # 4 DAPI models more (and level 4's 2 trained on both phenotypes), their 12 runs, and per
    # DAPI (model type, test set) the seeds' spread
    assert jobs["train"] == 4 + 2 and jobs["evaluate"] == 12 and jobs["seed_spread"] == 12
    assert jobs["tables"] == 1


def test_a_config_overlay_reruns_only_the_rules_it_concerns_and_reaches_the_jobs(grid, tmp_path):
    overlay = tmp_path / "mine.yaml"
    overlay.write_text("figures: {dpi: 50}\n")
    assert planned(grid, configfile=[grid / "config.yaml", overlay]) == {
        "figures": 1,
        "screen_figures": 1,
        "all": 1,
    }
    assert planned(grid, "--config", "figures={formats: [svg]}") == {
        "figures": 1,
        "screen_figures": 1,
        "all": 1,
    }
    before = (grid / RESULTS / "figures" / "figure2.png").stat().st_size
    snakemake(
        grid,
        f"{RESULTS}/figures/figure2.png",
        "--forcerun",
        "figures",
        configfile=[grid / "config.yaml", overlay],
    )
    assert (
        grid / RESULTS / "figures" / "figure2.png"
    ).stat().st_size < before  # drawn at the overlay's 50 dpi, not 60
    snakemake(
        grid, f"{RESULTS}/figures/figure2.png", "--forcerun", "figures"
    )  # back as the other tests expect


def test_a_level_4_setting_reruns_only_level_4(grid, tmp_path):
    overlay = tmp_path / "screen.yaml"
    overlay.write_text("evaluation: {screen: {hit_sd: 2.5}}\n")
    assert planned(grid, configfile=[grid / "config.yaml", overlay]) == {
        "screen_tables": 1,
        "screen_figures": 1,
        "all": 1,
    }


def test_more_tta_samples_rerun_the_test_sets_inferences_and_evaluations_not_level_4(grid):
    """config/quick-crps.yaml's setting on the .test grid (2 samples there, 3 here): every model's
    test-set predictions and every run's evaluation again, no screen prediction (a screen's carry
    no TTA)."""
    plan = planned(grid, "--config", "infer={feature_samples: 3}")
    assert plan["infer"] == 8 and plan["evaluate"] == 24 and plan["tables"] == 1
    assert not {"train", "infer_screen", "screen_run", "store"} & set(plan)


def test_bad_config_and_a_run_outside_the_grid_fail_before_any_job(grid, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("grid:\n  stains: [dapi, gfp]\n")
    result = snakemake(grid, "-n", configfile=bad, check=False)
    assert (
        result.returncode != 0
        and "grid.stains[1]: 'gfp' is not one of dapi, fitc, cy5" in result.stdout + result.stderr
    )
    result = snakemake(
        grid, "-n", f"{RESULTS}/runs/lung-nontoxic.dapi.s0/kidney-toxic/scores.parquet", check=False
    )
    assert result.returncode != 0 and "MissingRuleException" in result.stdout + result.stderr
    # pairs: paper tests toxic-trained models on toxic test sets only
    result = snakemake(
        grid, "-n", f"{RESULTS}/runs/lung-toxic.dapi.s0/lung-nontoxic/scores.parquet", check=False
    )
    assert (
        result.returncode != 0
        and "lung-toxic.dapi.s0 on lung-nontoxic is not a run of this grid"
        in result.stdout + result.stderr
    )


def test_a_failing_job_leaves_no_output_and_the_rest_goes_on(grid, tmp_path):
    work = tmp_path / "failing"
    shutil.copytree(grid, work, symlinks=True)
    model = work / RESULTS / "models" / "breast-toxic.dapi.s0"
    (model / "summary.json").unlink()
    (model / "last.pt").write_bytes(b"not a checkpoint")
    shutil.rmtree(work / RESULTS / "predictions" / "breast-toxic.dapi.s0")
    shutil.rmtree(work / RESULTS / "runs" / "breast-toxic.dapi.s0")
    shutil.rmtree(work / RESULTS / "runs" / "lung-nontoxic.dapi.s0" / "breast-toxic")
    shutil.rmtree(work / RESULTS / "tables")
    result = snakemake(work, "--keep-going", f"{RESULTS}/tables/runs.parquet", check=False)
    assert result.returncode != 0
    assert (
        "last.pt cannot be read"
        in (work / RESULTS / "logs" / "train" / "breast-toxic.dapi.s0.log").read_text()
    )
    assert not (model / "summary.json").exists()
    assert (
        work / RESULTS / "runs" / "lung-nontoxic.dapi.s0" / "breast-toxic" / "scores.parquet"
    ).exists()
    assert not (work / RESULTS / "tables" / "runs.parquet").exists()


def test_lint_reports_only_the_justified_item(tmp_path):
    """The one lint left, "Specify a conda environment or container for each rule", is justified in
    the README: the jobs need the vsgrid package itself, which a per-rule conda file cannot install."""
    result = snakemake(tmp_path, "--lint", configfile=ROOT / ".test" / "config.yaml", check=False)
    items = set(re.findall(r"^\s+\* (.+?):?$", result.stdout + result.stderr, re.M))
    assert items == {"Specify a conda environment or container for each rule."}, (
        result.stdout + result.stderr
    )
