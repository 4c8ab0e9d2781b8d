from pathlib import Path

import pytest

from vsgrid.cli import main
from vsgrid.config import load_config, result_settings, typed_strings, validate
from vsgrid.errors import VsgridError

QUICK = Path(__file__).resolve().parents[1] / "config" / "quick.yaml"


def test_empty_config_is_the_paper_grid_with_defaults():
    config = validate({})
    assert config["grid"] == {
        "cell_types": ["lung", "ovarian", "breast"],
        "phenotypes": ["nontoxic", "toxic"],
        "stains": ["dapi", "fitc", "cy5"],
        "seeds": [0, 1, 2],
        "stain_seeds": {},
        "pairs": "paper",
        "controls": [],
    }
    assert config["baseline"] == "test_distribution"
    assert config["data"]["splits"] == {"train": 21000, "val": 6000, "test": 4800}
    assert config["data"]["synthetic"]["cell_types"]["breast"]["density_per_mm2"] == 180


def test_defaults_fill_in_beside_given_keys_without_changing_them():
    config = validate(
        {
            "grid": {"cell_types": ["lung"], "seeds": [7]},
            "data": {
                "synthetic": {
                    "cell_types": {
                        "lung": {"density_per_mm2": 1, "cell_radius_um": 2, "nucleus_radius_um": 1}
                    }
                }
            },
        }
    )
    assert config["grid"]["seeds"] == [7]
    assert config["grid"]["stains"] == ["dapi", "fitc", "cy5"]
    assert config["data"]["synthetic"]["cell_types"]["lung"]["clustering"] == 0.3


@pytest.mark.parametrize(
    "config, names",
    [
        ({"gird": {}}, ["unknown key", "'gird'"]),
        ({"grid": {"stain": ["dapi"]}}, ["unknown key", "'grid.stain'"]),
        ({"data": {"splits": {"trian": 5}}}, ["'data.splits.trian'"]),
        ({"grid": {"stains": ["dapi", "gfp"]}}, ["grid.stains[1]", "'gfp'", "dapi, fitc, cy5"]),
        ({"grid": {"seeds": [0, 1, 1]}}, ["grid.seeds", "1 more than once"]),
        ({"grid": {"pairs": "some"}}, ["grid.pairs", "paper, all"]),
        ({"grid": {"cell_types": ["lung", "Lung Cells"]}}, ["grid.cell_types[1]"]),
        (
            {"grid": {"cell_types": ["lung", "kidney"]}},
            ["grid.cell_types", "'kidney'", "data.synthetic.cell_types"],
        ),
        ({"data": {"source": "ingest"}}, ["data.ingest.load_data"]),
        (
            {
                "data": {
                    "source": "ingest",
                    "ingest": {
                        "load_data": "/no/such.csv",
                        "plate_map": "x",
                        "plate_cell_types": "y",
                    },
                }
            },
            ["data.ingest.load_data", "/no/such.csv does not exist"],
        ),
        ({"grid": {"seeds": []}}, ["grid.seeds"]),
        ({"infer": {"mc_dropout": 8}}, ["infer.mc_dropout: 8", "network.dropout > 0"]),
        (
            {"infer": {"mc_dropout": 1}, "network": {"dropout": 0.5}},
            ["infer.mc_dropout: 1", "2 or more"],
        ),
        ({"network": {"dropout": 1.0}}, ["network.dropout"]),
        # Python's `$` matches before a final newline: names reach file names, so the schema ends
        # its patterns with \Z.
        ({"grid": {"cell_types": ["lung\n"]}}, ["grid.cell_types[0]", "lung\\n"]),
        (
            {"grid": {"controls": [{"test_set": "lung-toxic\n", "acquisition": "defocus"}]}},
            ["grid.controls[0].test_set"],
        ),
        (
            {"data": {"synthetic": {"acquisitions": {"blur\n": {"defocus_um": 1}}}}},
            ["data.synthetic.acquisitions", "blur\\n"],
        ),
        ({"grid": {"seeds": [2**64 + 1]}}, ["grid.seeds[0]", "maximum"]),
        ({"data": {"seed": 2**31}}, ["data.seed"]),
        ({"evaluation": {"seed": -1}}, ["evaluation.seed"]),
        (
            {"train": {"crop_size": 2048}},
            ["train.crop_size", "2048", "data.synthetic.field_size: 1080"],
        ),
    ],
)
def test_bad_config_names_the_key(config, names):
    with pytest.raises(VsgridError) as error:
        validate(config)
    for name in names:
        assert name in str(error.value)


def test_config_file_errors_name_the_file(tmp_path):
    with pytest.raises(VsgridError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("grid: [unclosed\n")
    with pytest.raises(VsgridError, match="broken.yaml.*not valid YAML"):
        load_config(broken)
    typo = tmp_path / "typo.yaml"
    typo.write_text("grid:\n  seed: [0]\n")
    with pytest.raises(VsgridError, match=r"typo.yaml.*'grid.seed'"):
        load_config(typo)


def test_command_line_reports_a_bad_config_with_exit_status_2(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("grid:\n  stains: [dapi, dapi]\n")
    assert main(["grid", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "c.yaml" in err and "grid.stains" in err and "'dapi' more than once" in err


def test_ingest_config_needs_plates_of_every_grid_cell_type(tmp_path):
    for name in ("load_data.csv", "plate_map.csv"):
        (tmp_path / name).write_text("x\n")
    (tmp_path / "plates.csv").write_text("plate,cell_type\nP1,lung\nP2,ovarian\n")
    ingest = {
        k: str(tmp_path / f)
        for k, f in (
            ("load_data", "load_data.csv"),
            ("plate_map", "plate_map.csv"),
            ("plate_cell_types", "plates.csv"),
        )
    } | {"pixel_size_um": 0.65}  # a LoadData CSV's TIFFs declare none
    with pytest.raises(
        VsgridError, match="'breast', which no plate of data.ingest.plate_cell_types"
    ):
        validate({"data": {"source": "ingest", "ingest": ingest}})
    assert (
        validate(
            {
                "grid": {"cell_types": ["lung", "ovarian"]},
                "data": {"source": "ingest", "ingest": ingest},
            }
        )["data"]["source"]
        == "ingest"
    )


def test_a_key_given_twice_or_a_directory_is_refused(tmp_path):
    twice = tmp_path / "twice.yaml"
    twice.write_text("grid:\n  seeds: [0]\n  seeds: [0, 1]\n")
    with pytest.raises(
        VsgridError, match="twice.yaml is not valid YAML: key 'seeds' is given twice .*line 3"
    ):
        load_config(twice)
    with pytest.raises(VsgridError, match="is a directory; give a YAML file"):
        load_config(tmp_path)


def test_the_former_section_names_are_read_with_a_deprecation_message(caplog):
    config = validate({"model": {"ngf": 8}, "train": {"bf16": False}})
    assert (
        config["network"]["ngf"] == 8
        and config["device"]["bf16"] is False
        and "model" not in config
    )
    assert (
        "config key model is deprecated" in caplog.text
        and "rename it to device.bf16" in caplog.text
    )
    with pytest.raises(VsgridError, match="both model and network are set"):
        validate({"model": {"ngf": 8}, "network": {"ngf": 16}})


def test_results_depend_on_settings_without_their_execution_only_keys():
    config = validate({"features": {"workers": 3}, "train": {"workers": 2, "lr": 0.001}})
    settings = result_settings(config, "features", "train")
    assert (
        "workers" not in settings["features"]
        and "workers" not in settings["train"]
        and settings["train"]["lr"] == 0.001
    )
    assert config["features"]["workers"] == 3  # the config itself is untouched


def test_level_4_settings_are_their_own_section():
    """evaluation.screen has steps of its own: changing it must not rerun the grid's evaluations."""
    config = validate({"evaluation": {"screen": {"enabled": True, "hit_sd": 2.0}}})
    settings = result_settings(config, "evaluation", "evaluation.screen")
    assert "screen" not in settings["evaluation"] and settings["evaluation.screen"]["hit_sd"] == 2.0
    assert "screen" in config["evaluation"]  # the config itself is untouched


def test_the_phenotype_rule_defaults_are_the_synthetic_plates_controls():
    from vsgrid.data.plates import NEGATIVE_CONTROLS, POSITIVE_CONTROLS

    rule = validate({})["data"]["phenotype_rule"]
    assert tuple(rule["negative_controls"]) == NEGATIVE_CONTROLS
    assert tuple(rule["positive_controls"]) == POSITIVE_CONTROLS


@pytest.mark.parametrize(
    "override, key, typed",
    [
        (
            "evaluation={screen: {fields_per_well: 2}}",
            ("evaluation", "screen", "fields_per_well"),
            2,
        ),
        (
            "evaluation={screen: {fields_per_well: {lung: 4, breast: 10}}}",
            ("evaluation", "screen", "fields_per_well"),
            {"lung": 4, "breast": 10},
        ),
        ("grid={stain_seeds: {dapi: [0, 1]}}", ("grid", "stain_seeds", "dapi"), [0, 1]),
        ("data={ingest: {z: 3}}", ("data", "ingest", "z"), 3),
        ("data={ingest: {z: max}}", ("data", "ingest", "z"), "max"),
        ("results={dir: '010'}", ("results", "dir"), "010"),  # a string stays one
    ],
)
def test_nested_config_overrides_are_typed_by_the_schema(override, key, typed):
    """Snakemake's --config reads a nested value as a string ('2'), also under a key that is one of
    several schemas (oneOf) or a mapping of any keys (additionalProperties)."""
    from snakemake.cli import parse_config

    node = typed_strings(parse_config([override]))
    for part in key:
        node = node[part]
    assert node == typed


def test_a_config_overlay_merges_into_its_section_and_a_key_value_is_not_a_file(tmp_path, capsys):
    overlay = tmp_path / "mine.yaml"
    overlay.write_text("evaluation: {screen: {fields_per_well: 2}}\n")
    config = load_config(QUICK, overlay)
    assert config["evaluation"]["screen"]["fields_per_well"] == 2
    assert config["evaluation"]["screen"]["enabled"] is True  # quick.yaml's, kept
    assert main(["grid", "--config", str(QUICK), "train={max_epochs: 4}"]) == 2
    assert "--config takes YAML files, KEY=VALUE is Snakemake's" in capsys.readouterr().err


def test_a_key_given_twice_in_a_json_config_is_refused(tmp_path):
    twice = tmp_path / "twice.json"
    twice.write_text('{"train": {"max_epochs": 3, "max_epochs": 4}}')
    with pytest.raises(
        VsgridError, match=r"twice.json is not valid JSON: key 'max_epochs' is given twice$"
    ):
        load_config(twice)


@pytest.mark.parametrize(
    "name, text, key",
    [
        (
            "c.yaml",
            "evaluation: {screen: {margins: {ec50_error: .nan}}}",
            "evaluation.screen.margins.ec50_error",
        ),
        ("c.yaml", "train: {lr: .inf}", "train.lr"),
        ("c.json", '{"evaluation": {"screen": {"hit_sd": NaN}}}', "evaluation.screen.hit_sd"),
    ],
)
def test_a_setting_that_is_not_a_finite_number_is_refused(tmp_path, name, text, key):
    path = tmp_path / name
    path.write_text(text + "\n")
    with pytest.raises(VsgridError, match=rf"{name}: .*{key}: (nan|inf) is not a finite number$"):
        load_config(path)
