from collections import Counter

import pytest

from vsgrid import grid
from vsgrid.cli import main
from vsgrid.config import validate
from vsgrid.errors import VsgridError
from vsgrid.grid import DataSet


@pytest.fixture
def paper():
    return validate({})


def role(run):
    """The design table's row of a run, written as NT_c -> T_c' etc."""
    a, b = run.model.train_set, run.test_set
    short = {"nontoxic": "NT", "toxic": "T"}
    return f"{short[a.phenotype]}_c -> {short[b.phenotype]}_c{'' if a.cell_type == b.cell_type else chr(39)}"


def test_paper_grid_counts(paper):
    assert grid.counts(paper) == {
        "models": 54,
        "runs": 243,
        "task 1": 54,
        "task 2": 54,
        "task 3": 135,
        "baseline runs": 54,
    }


def test_paper_grid_pairs_and_tasks_match_the_design_table(paper):
    runs = grid.runs(paper)
    per_pair = Counter(
        (role(r), r.task) for r in runs if r.model.stain == "dapi" and r.model.seed == 0
    )
    assert per_pair == {
        ("NT_c -> NT_c", 1): 3,
        ("NT_c -> T_c", 1): 3,
        ("NT_c -> NT_c'", 2): 6,
        ("T_c -> T_c", 3): 3,
        ("T_c -> T_c'", 3): 6,
        ("NT_c -> T_c'", 3): 6,
    }
    assert len({r.name for r in runs}) == 243


def test_test_distribution_baseline_is_the_model_of_the_test_set(paper):
    runs = grid.runs(paper)
    kept = {(r.model.train_set, r.test_set) for r in runs}
    for run in runs:
        assert run.baseline_train_set == run.test_set
        assert (run.baseline_train_set, run.test_set) in kept
    task1 = next(
        r for r in runs if role(r) == "NT_c -> T_c" and r.model.train_set.cell_type == "ovarian"
    )
    assert task1.baseline_train_set == DataSet("ovarian", "toxic")


def test_train_celltype_baseline(paper):
    runs = grid.runs(paper, baseline="train_celltype")
    for run in runs:
        expected = DataSet(run.model.train_set.cell_type, "toxic")
        if run.test_set.phenotype == "toxic":
            assert run.baseline_train_set == expected
        else:  # toxic-trained models are not tested on non-toxic sets in the paper grid
            assert run.baseline_train_set is None


def test_all_pairs_adds_the_nine_excluded_pairs(paper):
    config = validate({"grid": {"pairs": "all"}})
    counts = grid.counts(config)
    assert counts["runs"] == 324
    added = {r.name for r in grid.runs(config)} - {r.name for r in grid.runs(paper)}
    assert len(added) == 81
    assert all("-toxic." in name and name.endswith("-nontoxic") for name in added)
    assert counts["task 1"] == 54 + 27 and counts["task 3"] == 135 + 54


def test_grid_grows_with_the_config_lists():
    profiles = {
        c: {"density_per_mm2": 100, "cell_radius_um": 10, "nucleus_radius_um": 5} for c in "abcde"
    }
    config = validate(
        {
            "grid": {"cell_types": list("abcde"), "seeds": [0]},
            "data": {"synthetic": {"cell_types": profiles}},
        }
    )
    # 5 x 2 x 3 models; pairs: 10 x 10 minus the 5 x 5 toxic -> non-toxic ones.
    assert grid.counts(config)["models"] == 30
    assert grid.counts(config)["runs"] == 75 * 3


def test_names():
    model = grid.Model(DataSet("lung", "nontoxic"), "dapi", 0)
    assert model.name == "lung-nontoxic.dapi.s0" and model.model_type == "lung-nontoxic.dapi"
    run = grid.Run(model, DataSet("ovarian", "toxic"), 3, "both", DataSet("ovarian", "toxic"))
    assert run.name == "lung-nontoxic.dapi.s0@ovarian-toxic"
    assert DataSet.parse("ovarian-toxic") == DataSet("ovarian", "toxic")
    with pytest.raises(ValueError):
        DataSet.parse("ovarian_toxic")


def test_cli_prints_counts_and_writes_tsv(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("{}\n")
    out = tmp_path / "runs.tsv"
    assert main(["grid", "--config", str(config), "--tsv", str(out)]) == 0
    printed = capsys.readouterr().out
    for line in ("models: 54", "runs: 243", "task 1: 54", "task 2: 54", "task 3: 135"):
        assert line in printed
    rows = out.read_text().splitlines()
    assert rows[0].split("\t") == grid.TSV_COLUMNS
    assert len(rows) == 244
    assert (
        "lung-nontoxic.dapi.s0@lung-toxic\tlung-nontoxic.dapi.s0\tlung-nontoxic.dapi\tlung-nontoxic\tlung-toxic\tdapi\t0\t1\tphenotype\tlung-toxic"
        in rows
    )


def test_a_control_is_tested_by_its_twins_models_against_themselves_on_the_twin():
    config = validate(
        {"grid": {"controls": [{"test_set": "lung-nontoxic", "acquisition": "defocus"}]}}
    )
    control = grid.DataSet.parse("lung-nontoxic+defocus")
    assert control.twin == DataSet("lung", "nontoxic") and control.name == "lung-nontoxic+defocus"
    runs = [r for r in grid.runs(config) if r.test_set == control]
    assert len(runs) == 9 and {r.model.train_set for r in runs} == {
        control.twin
    }  # 3 stains x 3 seeds
    assert all(
        r.task == 0 and r.shift == "acquisition" and r.baseline_train_set == control.twin
        for r in runs
    )
    assert grid.counts(config)["runs"] == 243 + 9
    restricted = grid.restrict(config, ["lung-nontoxic+defocus"])["grid"]
    assert grid.data_sets(restricted) == [] and grid.controls(restricted) == [control]


def test_a_control_needs_a_grid_test_set_and_known_optics():
    with pytest.raises(
        VsgridError,
        match=r"grid.controls\[0\].test_set: 'kidney-toxic' is not a data set of the grid",
    ):
        validate({"grid": {"controls": [{"test_set": "kidney-toxic", "acquisition": "defocus"}]}})
    with pytest.raises(
        VsgridError,
        match=r"grid.controls\[0\].acquisition: 'fog' is not in data.synthetic.acquisitions \(defocus\)",
    ):
        validate({"grid": {"controls": [{"test_set": "lung-toxic", "acquisition": "fog"}]}})


def test_a_stain_can_have_seeds_of_its_own():
    config = validate(
        {"grid": {"cell_types": ["lung"], "seeds": [0], "stain_seeds": {"dapi": [0, 1]}}}
    )
    names = {m.name for m in grid.models(config["grid"])}
    assert {"lung-nontoxic.dapi.s1", "lung-toxic.dapi.s1"} <= names
    assert not any(name.endswith(("fitc.s1", "cy5.s1")) for name in names)
    assert len(names) == 2 * (3 + 1)  # 2 train sets x (3 stains + dapi's second seed)
    per_model_type = Counter(run.model.model_type for run in grid.runs(config))
    assert per_model_type["lung-nontoxic.dapi"] == 2 * per_model_type["lung-nontoxic.fitc"]
    with pytest.raises(VsgridError, match="grid.stain_seeds.dapi"):
        validate({"grid": {"seeds": [0], "stain_seeds": {"dapi": [1, 2]}}})


def test_a_screen_control_reads_as_a_model_and_never_parses_as_one():
    from vsgrid.grid import Model, ScreenControl, ScreenRun, control_runs

    control = ScreenControl.parse("control-oracle.dapi")
    assert (control.name, control.model_type, control.stain) == ("control-oracle.dapi",) * 2 + (
        "dapi",
    )
    assert ScreenRun(control, "lung").baseline is None
    with pytest.raises(ValueError):
        Model.parse(control.name)
    with pytest.raises(ValueError):
        ScreenControl.parse("lung-nontoxic.dapi.s0")
    config = validate(
        {
            "grid": {"cell_types": ["lung", "breast"]},
            "evaluation": {"screen": {"enabled": True, "stains": ["dapi"]}},
        }
    )
    assert [f"{r.model.name}@{r.cell_type}" for r in control_runs(config)][:3] == [
        "control-oracle.dapi@lung",
        "control-degraded.dapi@lung",
        "control-affine.dapi@lung",
    ]
    config["evaluation"]["screen"]["controls"]["names"] = ["degraded", "oracle"]
    assert [f"{r.model.name}@{r.cell_type}" for r in control_runs(config)][:3] == [
        "control-oracle.dapi@lung",
        "control-degraded.dapi@lung",
        "control-oracle.dapi@breast",
    ]
    config["evaluation"]["screen"]["controls"]["enabled"] = False
    assert control_runs(config) == []


def test_level_4_trains_on_both_phenotypes_for_its_own_screen_only():
    """``both`` in train_phenotypes adds one model type per cell type, trained on the fields of
    both phenotypes and judged on its own screen; levels 1 to 3 keep their grid."""
    config = validate(
        {
            "grid": {"cell_types": ["lung", "breast"], "seeds": [0]},
            "evaluation": {
                "screen": {
                    "enabled": True,
                    "stains": ["dapi"],
                    "train_phenotypes": ["nontoxic", "both"],
                }
            },
        }
    )
    both = DataSet.parse("lung-both")
    assert both.phenotypes == ("nontoxic", "toxic")
    assert grid.screen_train_sets(config) == [both, DataSet("breast", "both")]
    runs = [f"{r.model.name}@{r.cell_type}" for r in grid.screen_runs(config)]
    assert runs == [
        "lung-nontoxic.dapi.s0@lung",
        "lung-nontoxic.dapi.s0@breast",
        "breast-nontoxic.dapi.s0@lung",
        "breast-nontoxic.dapi.s0@breast",
        "lung-both.dapi.s0@lung",
        "breast-both.dapi.s0@breast",
    ]
    own = grid.screen_runs(config)[-1]
    assert own.is_baseline and own.baseline.name == "breast-both.dapi.s0"
    assert grid.counts(config)["models"] == 3 * 2 * 2  # the grid's own: 3 stains x 2 data sets each
    assert grid.find_model(config, "lung-both", "dapi", 0) == grid.Model(both, "dapi", 0)
    assert grid.restrict(config, ["lung-both"])["grid"]["phenotypes"] == ["both"]
    with pytest.raises(VsgridError, match="not a data set of the grid"):
        grid.find_model(validate({}), "lung-both", "dapi", 0)
    with pytest.raises(ValueError):
        DataSet.parse("lung-both+defocus")
    with pytest.raises(VsgridError, match="train_phenotypes"):
        validate({"evaluation": {"screen": {"train_phenotypes": ["all"]}}})
