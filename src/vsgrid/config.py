"""Loading and validating the configuration.

The JSON schema in ``workflow/schemas/config.schema.yaml`` is the single description of every key
and its default; the Snakefile and the command line both validate through :func:`validate`, so a
config means the same thing to both.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import logging
import math
from pathlib import Path

import jsonschema
import yaml

from vsgrid.errors import VsgridError
from vsgrid.files import write_text

SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")
log = logging.getLogger(__name__)

# Keys that moved, old -> new, still read (with a deprecation message) for one release.
MOVED = {
    ("model",): ("network",),
    ("train", "bf16"): ("device", "bf16"),
    ("train", "channels_last"): ("device", "channels_last"),
    ("train", "cudnn_benchmark"): ("device", "cudnn_benchmark"),
}


def load_schema() -> dict:
    with open(SCHEMA_PATH) as f:
        return yaml.safe_load(f)


def _with_defaults(validator_class):
    """Extend a validator so that it fills in each missing property's default as it validates."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_Validator = _with_defaults(jsonschema.Draft202012Validator)


def _key(path) -> str:
    """Render a jsonschema error path as the dotted key a user would write: ``grid.seeds[1]``."""
    key = ""
    for part in path:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return key or "<top level>"


def _describe(error: jsonschema.ValidationError) -> str:
    key = _key(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = set(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - allowed)
        prefix = f"{key}." if error.absolute_path else ""
        names = ", ".join(f"'{prefix}{name}'" for name in unknown)
        return f"unknown key {names}; known keys here: {', '.join(sorted(allowed))}"
    if error.validator == "uniqueItems":
        seen, duplicates = set(), []
        for item in error.instance:
            if item in seen and item not in duplicates:
                duplicates.append(item)
            seen.add(item)
        return f"{key}: {error.instance} lists {', '.join(map(repr, duplicates))} more than once"
    if error.validator == "enum":
        return (
            f"{key}: {error.instance!r} is not one of {', '.join(map(str, error.validator_value))}"
        )
    return f"{key}: {error.message}"


def validate(config: dict) -> dict:
    """Validate ``config`` against the schema and return a copy with every default filled in.

    Raises
    ------
    VsgridError
        Naming the offending key, for the first schema violation found and for cross-key
        problems the schema cannot express (a grid cell type without a data source).
    """
    config = copy.deepcopy(config) if config is not None else {}
    if not isinstance(config, dict):
        raise VsgridError(
            f"the configuration must be a mapping of keys, not {type(config).__name__}"
        )
    _move_renamed_keys(config)
    errors = sorted(
        _Validator(load_schema()).iter_errors(config), key=lambda e: list(map(str, e.absolute_path))
    )
    if errors:
        raise VsgridError("invalid configuration: " + _describe(errors[0]))
    _check_finite(config)
    _check_cross_keys(config)
    return config


def _check_finite(node, path: tuple = ()) -> None:
    """No setting is NaN or infinite: YAML's ``.nan`` and ``.inf`` (JSON's NaN, Infinity) are of
    the schema's type number and pass its bounds, and a NaN margin would decide nothing. No key
    takes one today; one that should would say so here."""
    if isinstance(node, float) and not math.isfinite(node):
        raise VsgridError(f"invalid configuration: {_key(path)}: {node} is not a finite number")
    if isinstance(node, (dict, list)):
        for key, item in node.items() if isinstance(node, dict) else enumerate(node):
            _check_finite(item, (*path, key))


def _move_renamed_keys(config: dict) -> None:
    for old, new in MOVED.items():
        *old_parents, old_key = old
        *new_parents, new_key = new
        source = config
        for parent in old_parents:
            source = source.get(parent) if isinstance(source, dict) else None
        if not isinstance(source, dict) or old_key not in source:
            continue
        target = config
        for parent in new_parents:
            target = target.setdefault(parent, {})
        if new_key in target:
            raise VsgridError(
                f"invalid configuration: both {'.'.join(old)} and {'.'.join(new)} are set; keep {'.'.join(new)}"
            )
        log.warning(
            "config key %s is deprecated and will be removed in the next release: rename it to %s",
            ".".join(old),
            ".".join(new),
        )
        target[new_key] = source.pop(old_key)


def _check_cross_keys(config: dict) -> None:
    data = config["data"]
    _check_screen(config)
    _check_controls(config)
    grid = config["grid"]
    for stain, seeds in grid["stain_seeds"].items():
        if stain not in grid["stains"] or grid["seeds"][0] not in seeds:
            raise VsgridError(
                f"invalid configuration: grid.stain_seeds.{stain}: the stain must be in "
                f"grid.stains and its seeds must include grid.seeds[0] ({grid['seeds'][0]}), "
                "whose models the figures show"
            )
    samples = config["infer"]["mc_dropout"]
    if samples == 1 or (samples and not config["network"]["dropout"]):
        raise VsgridError(
            f"invalid configuration: infer.mc_dropout: {samples} "
            + (
                "passes give no spread; 2 or more, or 0 for none"
                if samples == 1
                else "needs models trained with dropout (network.dropout > 0)"
            )
        )
    crop, field = config["train"]["crop_size"], data["synthetic"]["field_size"]
    if data["source"] == "synthetic" and crop and crop > field:
        raise VsgridError(
            f"invalid configuration: train.crop_size: {crop} is larger than the fields "
            f"(data.synthetic.field_size: {field})"
        )
    if data["source"] == "synthetic":
        profiles = data["synthetic"]["cell_types"]
        for cell_type in config["grid"]["cell_types"]:
            if cell_type not in profiles:
                raise VsgridError(
                    f"invalid configuration: grid.cell_types lists {cell_type!r}, which has no profile "
                    f"in data.synthetic.cell_types (known: {', '.join(profiles)})"
                )
    else:
        _check_ingest(config)


def _check_ingest(config: dict) -> None:
    """The input files of ``data.source: ingest``: one source of fields, files that exist, a
    plate of every cell type of the grid, a pixel size for TIFFs and four labels in each channel
    map."""
    ingest = config["data"]["ingest"]
    if bool(ingest["load_data"]) == bool(ingest["ome_zarr"]):
        raise VsgridError(
            "invalid configuration: set exactly one of data.ingest.load_data (a LoadData CSV of "
            "TIFFs) and data.ingest.ome_zarr (OME-Zarr plates); "
            f"{'both are' if ingest['load_data'] else 'neither is'} set"
        )
    if ingest["z"] is not None and ingest["load_data"]:
        raise VsgridError(
            "invalid configuration: data.ingest.z applies to ome_zarr plates; a LoadData CSV's "
            "TIFFs are single planes"
        )
    for key in ("plate_map", "plate_cell_types"):
        if not ingest[key]:
            raise VsgridError(
                f"invalid configuration: data.source is 'ingest' but data.ingest.{key} is not set"
            )
    files = [(k, ingest[k]) for k in ("load_data", "plate_map", "plate_cell_types") if ingest[k]]
    plates = [e if isinstance(e, dict) else {"path": e} for e in ingest["ome_zarr"] or []]
    for key, path in files + [("ome_zarr", plate["path"]) for plate in plates]:
        if not (Path(path).is_dir() if key == "ome_zarr" else Path(path).is_file()):
            raise VsgridError(f"invalid configuration: data.ingest.{key}: {path} does not exist")
    if ingest["load_data"] and ingest["pixel_size_um"] is None:
        raise VsgridError(
            "invalid configuration: data.ingest.pixel_size_um is not set; a LoadData CSV's TIFFs "
            "declare no pixel size, so give it in micrometers"
        )
    # Two stains of one label would both read that one image: a FITC store of DAPI.
    maps = [("data.ingest.channels", ingest["channels"])] + [
        (f"data.ingest.ome_zarr[{k}].channels", plate["channels"])
        for k, plate in enumerate(plates)
        if "channels" in plate
    ]
    for key, channels in maps:
        first = {}
        for channel, label in channels.items():
            if label in first:
                raise VsgridError(
                    f"invalid configuration: {key}.{first[label]} and {key}.{channel} are both "
                    f"{label!r}; each channel needs a label of its own"
                )
            first[label] = channel
    with open(ingest["plate_cell_types"], newline="") as f:
        known = {row.get("cell_type") for row in csv.DictReader(f)}
    for cell_type in config["grid"]["cell_types"]:
        if cell_type not in known:
            raise VsgridError(
                f"invalid configuration: grid.cell_types lists {cell_type!r}, which no plate of "
                f"data.ingest.plate_cell_types ({ingest['plate_cell_types']}) has"
            )


def _check_screen(config: dict) -> None:
    screen = config["evaluation"]["screen"]
    unknown = [s for s in screen["stains"] if s not in config["grid"]["stains"]]
    if unknown:
        raise VsgridError(
            f"invalid configuration: evaluation.screen.stains: {unknown[0]!r} is not in "
            f"grid.stains ({', '.join(config['grid']['stains'])})"
        )
    fields = screen["fields_per_well"]
    cell_types = config["grid"]["cell_types"] if isinstance(fields, dict) else []
    missing = [c for c in cell_types if c not in fields]
    if missing:
        raise VsgridError(
            f"invalid configuration: evaluation.screen.fields_per_well names no number of fields "
            f"for {missing[0]!r} (give one per cell type of grid.cell_types, or one for all)"
        )


def _check_controls(config: dict) -> None:
    """Each control is a data set of the grid seen through optics the generator knows."""
    data = config["data"]
    for k, control in enumerate(config["grid"]["controls"]):
        cell_type, _, phenotype = control["test_set"].partition("-")
        if (
            cell_type not in config["grid"]["cell_types"]
            or phenotype not in config["grid"]["phenotypes"]
        ):
            raise VsgridError(
                f"invalid configuration: grid.controls[{k}].test_set: {control['test_set']!r} "
                "is not a data set of the grid"
            )
        if (
            data["source"] != "synthetic"
            or control["acquisition"] not in data["synthetic"]["acquisitions"]
        ):
            known = (
                ", ".join(data["synthetic"]["acquisitions"])
                if data["source"] == "synthetic"
                else "none: controls are rendered, synthetic data only"
            )
            raise VsgridError(
                f"invalid configuration: grid.controls[{k}].acquisition: "
                f"{control['acquisition']!r} is not in data.synthetic.acquisitions ({known})"
            )


def merge(base: dict, update: dict) -> dict:
    """Deep merge: mappings are merged key by key, anything else in ``update`` replaces."""
    merged = dict(base)
    for key, value in update.items():
        merged[key] = (
            merge(merged[key], value)
            if isinstance(value, dict) and isinstance(merged.get(key), dict)
            else value
        )
    return merged


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML that refuses a key given twice in one mapping (PyYAML silently keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple]) -> dict:
    """A JSON object that refuses a key given twice (``json`` silently keeps the last, as PyYAML)."""
    seen = set()
    for key, _ in pairs:
        if key in seen:
            raise _DuplicateKey(f"key {key!r} is given twice")
        seen.add(key)
    return dict(pairs)


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        raise VsgridError(
            f"config file {path} is a directory; give a YAML file such as config/quick.yaml"
        )
    try:
        with open(path) as f:
            # JSON is the workflow's hand-over format; YAML 1.1 would read its 1e-05 as a string
            raw = (
                json.load(f, object_pairs_hook=_unique_keys)
                if path.suffix == ".json"
                else yaml.load(f, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
            )
    except FileNotFoundError:
        # `vsgrid grid --config quick.yaml 'train={max_epochs: 4}'`: Snakemake's override syntax
        hint = "; --config takes YAML files, KEY=VALUE is Snakemake's" if "=" in path.name else ""
        raise VsgridError(f"config file {path} does not exist{hint}") from None
    except (yaml.YAMLError, json.JSONDecodeError, _DuplicateKey) as exc:
        raise VsgridError(
            f"config file {path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: "
            f"{' '.join(str(exc).split())}"
        ) from None
    if raw is not None and not isinstance(raw, dict):
        raise VsgridError(
            f"config file {path} must hold a mapping of keys, not {type(raw).__name__}"
        )
    return raw or {}


def typed_strings(value, schema: dict | None = None):
    """``value`` with the strings the schema types otherwise (integer, number, boolean, null) read
    as YAML when that gives the type: Snakemake's ``--config train={max_epochs: 4}`` hands over
    ``'4'``, at any depth. Anything else is left for :func:`validate` to report."""
    schema = load_schema() if schema is None else schema
    # a key such as fields_per_well is one of several schemas (a number, or one per cell type)
    alternatives = [schema, *schema.get("oneOf", []), *schema.get("anyOf", [])]
    if isinstance(value, dict):
        return {key: typed_strings(item, _member(alternatives, key)) for key, item in value.items()}
    if isinstance(value, list):
        items = next((s["items"] for s in alternatives if isinstance(s.get("items"), dict)), {})
        return [typed_strings(item, items) for item in value]
    types = set()
    for alternative in alternatives:
        given = alternative.get("type", [])
        types |= {given} if isinstance(given, str) else set(given)
    if not isinstance(value, str) or "string" in types:
        return value
    parsed = yaml.safe_load(value) if value.strip() else value
    kinds = {"integer": int, "number": (int, float), "boolean": bool, "null": type(None)}
    fits = any(isinstance(parsed, kinds[t]) for t in types & kinds.keys())
    return parsed if fits and not (isinstance(parsed, bool) and "boolean" not in types) else value


def _member(alternatives: list[dict], key: str) -> dict:
    """The schema of a mapping's ``key``: its own property, else what any key of the mapping is
    (``additionalProperties``, as in grid.stain_seeds), else none."""
    for alternative in alternatives:
        if key in alternative.get("properties", {}):
            return alternative["properties"][key]
    return next(
        (
            s["additionalProperties"]
            for s in alternatives
            if isinstance(s.get("additionalProperties"), dict)
        ),
        {},
    )


def load_config(*paths: str | Path) -> dict:
    """Read YAML config files, merge them in order (later ones win, like Snakemake's
    ``--configfile a b``) and :func:`validate` the result; errors name the files."""
    raw: dict = {}
    for path in paths:
        raw = merge(raw, read_yaml(path))
    try:
        return validate(raw)
    except VsgridError as exc:
        raise VsgridError(f"{', '.join(map(str, paths))}: {exc}") from None


def workflow_config(config: dict, paths: list[str]) -> dict:
    """The config Snakemake merged from its ``--configfile`` ``paths`` and ``--config`` values,
    validated. Snakemake keeps the last of a key given twice in one file: each file is read
    again here, where that is refused."""
    for path in paths:
        read_yaml(path)
    return validate(typed_strings(config))


def job_config(config: dict, folder: str | Path) -> Path:
    """The validated ``config`` as the JSON file every job of the workflow reads (``vsgrid ...
    --config FILE``), in ``folder``: named by its content, and written by the first parse that
    needs it (every job parses the Snakefile again)."""
    text = json.dumps(config, sort_keys=True, indent=1)
    path = Path(folder) / f"config-{hashlib.sha256(text.encode()).hexdigest()[:16]}.json"
    return path if path.exists() else write_text(text, path)


# Keys that change how a step runs, not what it computes: they neither rerun a step nor make a
# model folder train afresh.
EXECUTION_ONLY = (
    ("data", "synthetic", "workers"),
    ("train", "workers"),
    ("train", "preload_mb"),
    ("infer", "threads"),
    ("features", "workers"),
    ("evaluation", "block_images"),
)


# Nested sections with steps of their own: a step that reads the parent section does not depend on
# them; a step that names one ("evaluation.screen") does.
OWN_SECTIONS = (("evaluation", "screen"),)


def result_settings(config: dict, *sections: str) -> dict:
    """The config's ``sections`` (a dotted name picks a nested section or key) without their
    execution-only keys and without the nested sections that have steps of their own: what a
    step's results depend on."""
    chosen = {}
    for section in sections:
        node = config
        for key in section.split("."):
            node = node[key]
        chosen[section] = copy.deepcopy(node)
    for parent, child in OWN_SECTIONS:
        if isinstance(chosen.get(parent), dict):
            chosen[parent].pop(child, None)
    for *parents, key in EXECUTION_ONLY:
        node = chosen
        for parent in parents:
            node = node.get(parent, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(key, None)
    return chosen
