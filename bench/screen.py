"""Level 4's cost and its assay: does a screen job's memory stay flat as its plates grow, and
does the real stain separate its controls?

    .venv/bin/python bench/screen.py [--plates 1 3] [--size 128] [--pixel-size 1.3]
        [--fields-per-well 1] [--forest-fields 200] [--compounds N] [--out DIR]

A paper-size slice (one of a well's 9 fields of 1080 x 1080 at 0.65 um, one compound):

    .venv/bin/python bench/screen.py --plates 1 2 --size 1080 --pixel-size 0.65 --compounds 1 \
        --forest-fields 64

For each number of held-out plates (384 wells, ``--fields-per-well`` fields each; every compound
unless --compounds keeps fewer, and the controls), builds the lung screen of the quick config at
``--size`` pixels and runs level 4's steps as the workflow does, each as its own `vsgrid` process:
segment the real DAPI (of the screen, and of the phenotype forest's training fields, control
wells of the other plate), profile it per well (screen-reference, with the phenotype forest),
profile a virtual stain (screen-run: the real stain blurred and noisy, segmented as an inference
job would) and compute the decisions with their CIs (screen-tables). Per step: CPU seconds per
screen image and peak memory (resident set of the process and its workers): the same peak at 3
plates as at 1 means the step streams. Then the real stain's assay on the larger screen: DMSO
cells per well and the Z' of its best readouts (calls.assay_z_prime, the best positive
control's).

The ranking the profiles read is written by hand (20 intensity and shape features): ranking
costs nothing here that bench/scale.py does not measure.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
import zarr
from measure import arguments, run
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parents[1]
TINY = {"plates": [1, 2], "size": 96, "compounds": 1, "forest_fields": 16}


def config_for(work: Path, plates: int, args) -> Path:
    config = yaml.safe_load((ROOT / "config" / "quick.yaml").read_text())
    config["grid"].update(cell_types=["lung"], stains=["dapi"], controls=[])
    config["data"].update(
        dir=str(work / "data"), splits={"train": 16, "val": 8, "test": 8}, test_plates=plates
    )
    config["data"]["synthetic"].update(
        plates_per_cell_type=plates + 1, field_size=args.size, pixel_size_um=args.pixel_size
    )
    config["evaluation"]["screen"].update(
        compounds=args.compounds,
        fields_per_well=args.fields_per_well,
        forest_fields=args.forest_fields,
        bootstrap_resamples=100,
        # one model's screen is what this times; the controls' cost is bench/jobs.py's on quick
        controls={"enabled": False},
        train_phenotypes=["nontoxic"],
    )
    config["results"]["dir"] = str(work / "results")
    work.mkdir(parents=True, exist_ok=True)
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def layout_of(work: Path):
    """The paths of the screen measured in ``work`` (:func:`config_for`'s)."""
    from vsgrid.layout import Layout

    return Layout.of(yaml.safe_load((work / "config.yaml").read_text()))


def hand_ranking(path: Path) -> None:
    from vsgrid.evaluation.features import feature_names
    from vsgrid.files import write_table

    names = [n for n in feature_names(("intensity", "sizeshape")) if "Euler" not in n][:20]
    write_table(pd.DataFrame({"feature": names, "selected": True, "rank": np.arange(1, 21)}), path)


def virtual_screen(store: Path, out: Path) -> None:
    """The real DAPI of the screen blurred and noisy, with its own classical masks, as infer writes it."""
    from vsgrid import arrays
    from vsgrid.config import validate
    from vsgrid.data.store import U16_MAX, open_store
    from vsgrid.evaluation.segment import segmenter

    opened = open_store(store)
    n, _, height, width = opened.images("test").shape
    group = zarr.open_group(out, mode="w")
    image = arrays.create(
        group, (n, height, width), chunks=(1, height, width), dtype="uint16", name="image"
    )
    labels = arrays.create(
        group, (n, height, width), chunks=(1, height, width), dtype="int32", name="labels"
    )
    segment = segmenter(
        validate({"segmentation": {"backend": "classical"}})["segmentation"],
        "dapi",
        float(opened.attrs["pixel_size_um"]),
    )
    rng = np.random.default_rng(0)
    for i in range(n):
        real = opened.images("test")[i, 1].astype(np.float32)
        predicted = np.clip(
            ndi.gaussian_filter(real, 1.0) + rng.normal(0, 100, real.shape), 0, U16_MAX
        ).astype(np.uint16)
        image[i], labels[i] = predicted, segment(predicted[None])[0]
    group.attrs.update(
        {
            "stain": "dapi",
            "test_set": opened.attrs["data_set"],
            "store_id": opened.store_id,
            "model": "lung-nontoxic.dapi.s0",
        }
    )


def measure_plates(work: Path, plates: int, args) -> tuple[int, dict]:
    config = config_for(work, plates, args)
    c = ["--config", str(config)]
    steps = {"screen_store": run(["vsgrid", "screen-store", *c, "--cell-type", "lung"], work)}
    layout, model = layout_of(work), "lung-nontoxic.dapi.s0"
    ranking = layout.ranking("lung", "dapi")
    hand_ranking(ranking)
    masks = layout.screen_masks("lung", "dapi")
    forest_masks = layout.screen_forest_masks("lung", "dapi")
    real_wells = layout.screen_real_wells("lung", "dapi")
    forest = layout.screen_forest("lung", "dapi")
    lung_dapi = [*c, "--cell-type", "lung", "--stain", "dapi", "--masks", str(masks)]
    steps["segment_screen"] = run(
        ["vsgrid", "screen-segment", *lung_dapi, "--forest-masks", str(forest_masks)], work
    )
    steps["screen_reference"] = run(
        ["vsgrid", "screen-reference", *lung_dapi, "--forest-masks", str(forest_masks)]
        + ["--ranking", str(ranking), "--wells", str(real_wells), "--forest", str(forest)],
        work,
    )
    prediction = layout.screen_prediction(model, "lung")
    virtual_screen(layout.screen_store("lung"), prediction)
    steps["screen_run"] = run(
        ["vsgrid", "screen-run", *c, "--cell-type", "lung", "--stain", "dapi"]
        + ["--model", model, "--prediction", str(prediction), "--reference", str(real_wells)]
        + ["--forest", str(forest), "--out", str(layout.screen_wells(model, "lung"))],
        work,
    )
    steps["screen_tables"] = run(["vsgrid", "screen-tables", *c, "--out", str(layout.tables)], work)
    images = zarr.open_array(masks, mode="r").shape[0]
    return images, steps


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--plates", type=int, nargs=2, default=[1, 3], help="held-out plates, two screen sizes"
    )
    parser.add_argument("--size", type=int, default=128, help="field side in pixels")
    parser.add_argument("--pixel-size", type=float, default=1.3, help="um per pixel")
    parser.add_argument("--fields-per-well", type=int, default=1, help="fields of each well")
    parser.add_argument(
        "--forest-fields", type=int, default=200, help="control-well fields teaching the forest"
    )
    parser.add_argument(
        "--compounds", type=int, help="the first this many compounds' wells (default: all)"
    )
    parser.add_argument("--out", type=Path, default=Path("/tmp/vsgrid-screen"))
    args = arguments(parser, TINY)
    shutil.rmtree(args.out, ignore_errors=True)
    measured = {p: measure_plates(args.out / f"plates-{p}", p, args) for p in args.plates}
    (small, (n_small, s_small)), (large, (n_large, s_large)) = measured.items()
    print(
        f"lung screen, {args.size} x {args.size} fields at {args.pixel_size} um,"
        f" {args.fields_per_well} per well: {n_small} images ({small} plate(s)) and {n_large} ({large})"
    )
    print(
        f"{'step':<17} {'core-s/image':>12} {'peak MB @' + str(small):>12}"
        f" {'peak MB @' + str(large):>12}"
    )
    for step in s_small:
        per_image = (s_large[step][2] - s_small[step][2]) / (n_large - n_small)
        print(f"{step:<17} {per_image:12.4f} {s_small[step][1]:12.0f} {s_large[step][1]:12.0f}")
    assay(layout_of(args.out / f"plates-{large}").screen_real_wells("lung", "dapi"))


def assay(real_wells: Path, shown: int = 3) -> None:
    """The real stain's cells per DMSO well and the readouts with the highest Z'."""
    from vsgrid.screen.calls import assay_controls, assay_z_prime
    from vsgrid.screen.metrics import Missing
    from vsgrid.screen.plate import Plate, ScreenSettings
    from vsgrid.screen.tables import DESIGN
    from vsgrid.screen.wells import readouts

    wells = pd.read_parquet(real_wells)
    plate = Plate(wells[DESIGN], ScreenSettings())  # Z' per plate, as the tables read it
    index = np.arange(len(wells))[None, :]
    z = {}
    for readout in readouts(wells):
        try:
            values = wells[readout].to_numpy(float)
            controls = assay_controls(plate, values)
            z[readout] = float(assay_z_prime(plate, values, index, controls)[0])
        except Missing:
            continue
    best = sorted(z, key=z.get, reverse=True)[:shown]
    cells = wells.loc[plate.negative, "cell_count"].mean()
    print(
        f"real DAPI: {cells:.0f} cells per DMSO well; Z' "
        + ", ".join(f"{r} {z[r]:.2f}" for r in best)
    )


if __name__ == "__main__":
    main()
