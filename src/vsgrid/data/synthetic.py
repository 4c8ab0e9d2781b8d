"""A synthetic high-throughput screen: plates of cells rendered as BF, DAPI, FITC and Cy5.

Every field is drawn from its own random stream, seeded by (seed, cell type, plate, well,
field), so a field renders the same whatever else is built and in whatever order or process.
Wells and plates vary as in real screens (:func:`vsgrid.data.plates.well_effects`, with streams
of their own): seeding density per well and per plate, fewer cells in edge wells, a gradient
across the plate, stain intensity per plate; every field of a well shares its well's factors.

Per field (:func:`sample_cells`, then :func:`render_field`):

1. the well's density factor scales the expected cell count, and the well's toxicity (dose
   response of its compound, :mod:`vsgrid.data.plates`) lowers it and turns a matching
   fraction of cells *affected*, in the shares of its compound's mechanism (a positive control
   acts by its own, :data:`vsgrid.data.plates.MECHANISMS`): damaged (arrested in G2: many
   DNA-damage foci, nuclei 1.3 times wider and brighter), condensed (smaller, brighter nuclei,
   rounded cells) or fragmented (apoptotic bodies, pan-nuclear Cy5). Unaffected cells are
   heterogeneous: a few are mitotic, some carry natural DNA damage;
2. cells are ellipses with wobbly outlines, placed in colonies whose tightness is the cell
   type's clustering; overlapping cells share the overlap by normalised distance, so the ground
   truth is a proper label image; nuclei are clipped to their cell;
3. the stains are rendered from that geometry (dome profiles, texture, foci, optical blur,
   shot and read noise), and bright-field from the same geometry through a phase-like model:
   optical thickness seen through a halo (difference of Gaussians), defocus blur, uneven
   illumination and noise. So BF carries the structure without being a copy of any stain.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import zarr
from scipy import ndimage as ndi
from skimage.segmentation import relabel_sequential
from tqdm import tqdm

from vsgrid import __version__
from vsgrid.data.plates import (
    INTENSITY_COLUMNS,
    MIXED_MECHANISM,
    label_phenotypes,
    mechanism,
    synthetic_layout,
    toxicity,
    toxicity_model,
    well_effects,
)
from vsgrid.data.splits import sample_splits, screen_splits
from vsgrid.data.store import as_uint16, create_store
from vsgrid.grid import DataSet, screen_fields_per_well, test_sets
from vsgrid.layout import screen_data_set, screen_store_path, store_path
from vsgrid.seeds import rng_for

HEALTHY, MITOTIC, DAMAGED, CONDENSED, FRAGMENTED = 0, 1, 2, 3, 4
# How a state looks beside a healthy cell (1 where it is not listed). Damaged cells arrest in G2:
# twice the DNA in a nucleus of about 1.7 times the area; dying ones condense their chromatin.
NUCLEUS_SCALE = {MITOTIC: 0.8, DAMAGED: 1.3, CONDENSED: 0.6}
DAPI_BRIGHTNESS = {MITOTIC: 2.2, DAMAGED: 1.2, CONDENSED: 1.8, FRAGMENTED: 2.0}


@dataclass(frozen=True)
class Optics:
    """How bright-field is acquired: a blur of the whole image (defocus) and the SD of the
    coefficients of the uneven illumination. A control changes them, and nothing else: its fields
    draw the same random numbers, so their stains are byte for byte those of the original."""

    defocus_um: float = 0.0
    illumination: float = 0.08


@dataclass(frozen=True)
class Profile:
    """What sets a cell type apart (sizes in um, density in cells per mm^2 of untreated wells)."""

    density_per_mm2: float
    cell_radius_um: float
    nucleus_radius_um: float
    elongation: float = 1.2
    clustering: float = 0.3
    sensitivity: float = 1.0


# --------------------------------------------------------------------------- cells


def _place(rng, n, shape, radius_px, clustering, min_distance):
    """Centres of ``n`` cells in colonies; points closer than ``min_distance`` are redrawn."""
    height, width = shape
    n_colonies = max(1, int(round(n * (1.0 - clustering))))
    colonies = rng.uniform((0, 0), (height, width), size=(n_colonies, 2))
    spread = radius_px * (1.0 + 4.0 * (1.0 - clustering))
    placed = np.empty((0, 2))
    for colony in rng.integers(0, n_colonies, size=n):
        candidates = colonies[colony] + rng.normal(0.0, spread, size=(8, 2))
        candidates = candidates[(candidates >= 0).all(1) & (candidates < (height, width)).all(1)]
        for point in candidates:
            if len(placed) == 0 or np.min(np.hypot(*(placed - point).T)) >= min_distance:
                placed = np.vstack([placed, point])
                break
    return placed


def _by_state(state: np.ndarray, values: dict[int, float]) -> np.ndarray:
    return np.select([state == s for s in values], list(values.values()), 1.0)


def sample_cells(
    rng,
    profile: Profile,
    toxicity_level: float,
    shape,
    pixel_size_um: float,
    *,
    density=1.0,
    states=MIXED_MECHANISM,
) -> dict:
    """Draw the cells of one field: a structure of arrays, one entry per cell.

    ``density`` multiplies the profile's expected cell count (the well's density factor);
    ``states``, the shares of DAMAGED, CONDENSED and FRAGMENTED among affected cells (the
    compound's mechanism). Lengths are in pixels. ``state`` is one of HEALTHY, MITOTIC, DAMAGED,
    CONDENSED, FRAGMENTED.
    """
    t = float(np.clip(toxicity_level * profile.sensitivity, 0.0, 1.0))
    area_mm2 = shape[0] * shape[1] * (pixel_size_um * 1e-3) ** 2
    n_expected = profile.density_per_mm2 * area_mm2 * (1.0 - 0.6 * t) * density
    cell_r = profile.cell_radius_um / pixel_size_um
    nuc_r = profile.nucleus_radius_um / pixel_size_um
    centre = _place(rng, rng.poisson(n_expected), shape, cell_r, profile.clustering, 2.1 * nuc_r)
    n = len(centre)

    affected = rng.random(n) < t
    state = np.where(rng.random(n) < 0.04, MITOTIC, HEALTHY)
    state[affected] = rng.choice([DAMAGED, CONDENSED, FRAGMENTED], affected.sum(), p=list(states))
    rounded = (state != HEALTHY) & (state != DAMAGED)

    size = rng.lognormal(0.0, 0.12, n)
    major = cell_r * size * np.where(rounded, 0.75, 1.0) * np.sqrt(profile.elongation)
    elongation = np.where(rounded, 1.05, profile.elongation * rng.lognormal(0.0, 0.1, n))
    nuc_major = nuc_r * size * _by_state(state, NUCLEUS_SCALE) * rng.lognormal(0.0, 0.08, n)
    # Damaged cells carry many gammaH2AX foci; dying ones show pan-nuclear signal instead.
    dna_damage = np.select(
        [state == DAMAGED, state == CONDENSED, affected],
        [12.0, 2.0, 0.0],
        np.where(rng.random(n) < 0.1, 4.0, 0.3),
    )
    return {
        "centre": centre,
        "theta": rng.uniform(0, np.pi, n),
        "major": major,
        "minor": major / elongation,
        "wobble": rng.uniform(0.0, 0.12, (n, 3)) * np.where(rounded, 0.3, 1.0)[:, None],
        "wobble_phase": rng.uniform(0, 2 * np.pi, (n, 3)),
        "nucleus_offset": rng.normal(0.0, 0.12, (n, 2)) * major[:, None],
        "nucleus_major": nuc_major,
        "nucleus_minor": nuc_major / np.where(rounded, 1.0, rng.uniform(1.0, 1.35, n)),
        "nucleus_theta": rng.uniform(0, np.pi, n),
        "state": state,
        "dapi": rng.lognormal(0.0, 0.2, n) * _by_state(state, DAPI_BRIGHTNESS),
        "fitc": rng.lognormal(0.0, 0.25, n) * np.where(rounded, 1.4, 1.0),
        "height": rng.lognormal(0.0, 0.15, n) * np.where(rounded, 1.6, 1.0),
        "foci": rng.poisson(dna_damage),
        "pan_nuclear": np.select(
            [state == FRAGMENTED, state == CONDENSED, state == DAMAGED], [0.6, 0.4, 0.1], 0.03
        ),
    }


# --------------------------------------------------------------------------- geometry


def _ellipse_distance(yy, xx, centre, theta, major, minor):
    """Normalised elliptical distance (1 on the outline) and the polar angle on the ellipse."""
    dy, dx = yy - centre[0], xx - centre[1]
    u = (dx * np.cos(theta) + dy * np.sin(theta)) / major
    v = (-dx * np.sin(theta) + dy * np.cos(theta)) / minor
    return np.hypot(u, v), np.arctan2(v, u)


def _window(centre, reach, shape):
    """The part of the field within ``reach`` of ``centre``; empty when that lies outside (a
    fragment of a nucleus can lie above or left of the field, where a negative end would wrap)."""
    low = np.clip(np.floor(centre - reach).astype(int), 0, shape)
    high = np.clip(np.ceil(centre + reach).astype(int) + 1, low, shape)
    return slice(low[0], high[0]), slice(low[1], high[1])


def _nucleus_blobs(cells, i, rng):
    """(centre, major, minor, theta) of the nucleus of cell ``i``: several pieces if fragmented."""
    centre = cells["centre"][i] + cells["nucleus_offset"][i]
    major, minor, theta = (
        cells["nucleus_major"][i],
        cells["nucleus_minor"][i],
        cells["nucleus_theta"][i],
    )
    if cells["state"][i] != FRAGMENTED:
        return [(centre, major, minor, theta)]
    pieces = rng.integers(3, 7)
    angles = rng.uniform(0, 2 * np.pi, pieces)
    offsets = (
        np.stack([np.sin(angles), np.cos(angles)], 1) * major * rng.uniform(0.3, 0.8, (pieces, 1))
    )
    return [(centre + o, 0.38 * major, 0.38 * major, 0.0) for o in offsets]


def rasterize(cells: dict, shape, rng: np.random.Generator):
    """Label images and dome profiles of cells and nuclei.

    Returns ``cell_labels``, ``nucleus_labels`` (uint16, nucleus labels are their cell's label
    and lie inside it), ``cell_profile``, ``nucleus_profile`` (float, 1 at the centre, 0 at
    the outline) and ``owner``, the index into ``cells`` of each label (-1 for background).
    """
    n = len(cells["centre"])
    best = np.full(shape, np.inf)
    cell_labels = np.zeros(shape, np.int32)
    for i in range(n):
        reach = cells["major"][i] * (1.0 + cells["wobble"][i].sum()) + 1
        win = _window(cells["centre"][i], reach, shape)
        yy, xx = np.ogrid[win]
        d, angle = _ellipse_distance(
            yy, xx, cells["centre"][i], cells["theta"][i], cells["major"][i], cells["minor"][i]
        )
        outline = 1.0 + sum(
            a * np.cos((k + 2) * angle + p)
            for k, (a, p) in enumerate(zip(cells["wobble"][i], cells["wobble_phase"][i]))
        )
        d = d / outline
        mine = (d < 1.0) & (d < best[win])
        best[win][mine] = d[mine]
        cell_labels[win][mine] = i + 1

    nucleus_best = np.full(shape, np.inf)
    nucleus_labels = np.zeros(shape, np.int32)
    for i in range(n):
        for centre, major, minor, theta in _nucleus_blobs(cells, i, rng):
            win = _window(centre, major + 1, shape)
            yy, xx = np.ogrid[win]
            d, _ = _ellipse_distance(yy, xx, centre, theta, major, minor)
            mine = (d < 1.0) & (d < nucleus_best[win]) & (cell_labels[win] == i + 1)
            nucleus_best[win][mine] = d[mine]
            nucleus_labels[win][mine] = i + 1

    # Cells hidden entirely under their neighbours leave gaps in the labels: close them.
    cell_labels, forward, inverse = relabel_sequential(cell_labels)
    nucleus_labels = forward[nucleus_labels]
    owner = inverse[np.arange(cell_labels.max() + 1)] - 1
    profile = lambda d: np.sqrt(np.clip(1.0 - d**2, 0.0, 1.0)).astype(np.float32)  # noqa: E731 - dome of a unit ellipse
    return (
        cell_labels.astype(np.uint16),
        nucleus_labels.astype(np.uint16),
        profile(best),
        profile(nucleus_best),
        owner,
    )


# --------------------------------------------------------------------------- images


def _noise_texture(rng, shape, sigma):
    texture = ndi.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma)
    return texture / (texture.std() + 1e-12)


def _detect(signal, background, gain, read_noise, rng):
    """Expected photo-electron counts plus shot and read noise."""
    counts = background + gain * signal
    return counts + rng.standard_normal(counts.shape, dtype=np.float32) * np.sqrt(
        np.maximum(counts, 0) * 0.5 + read_noise**2
    )


def _foci_image(cells, nucleus_labels, shape, rng):
    """Point sources for DNA-damage foci, spread uniformly inside each nucleus."""
    counts = cells["foci"]
    owner = np.repeat(np.arange(len(counts)), counts)
    radius = np.sqrt(rng.random(owner.size)) * 0.8
    angle = rng.uniform(0, 2 * np.pi, owner.size)
    u = radius * np.cos(angle) * cells["nucleus_major"][owner]
    v = radius * np.sin(angle) * cells["nucleus_minor"][owner]
    theta = cells["nucleus_theta"][owner]
    centre = cells["centre"][owner] + cells["nucleus_offset"][owner]
    y = np.rint(centre[:, 0] + u * np.sin(theta) + v * np.cos(theta)).astype(int)
    x = np.rint(centre[:, 1] + u * np.cos(theta) - v * np.sin(theta)).astype(int)
    inside = (y >= 0) & (y < shape[0]) & (x >= 0) & (x < shape[1])
    points = np.zeros(shape, np.float32)
    np.add.at(points, (y[inside], x[inside]), rng.lognormal(0.0, 0.3, inside.sum()))
    return points * (nucleus_labels > 0)


def render_field(
    cells, shape, pixel_size_um: float, rng, optics: Optics = Optics(), *, intensity=(1.0, 1.0, 1.0)
):
    """Render one field: ``image`` (4, H, W) uint16 in CHANNELS order and ``masks`` (2, H, W) uint16.

    ``intensity`` multiplies the signal of each stain (dapi, fitc, cy5): the plate's staining.
    """
    cell_labels, nucleus_labels, cell_profile, nucleus_profile, owner = rasterize(cells, shape, rng)
    px = 1.0 / pixel_size_um  # pixels per um
    in_cell, in_nucleus = cell_labels > 0, nucleus_labels > 0

    def per_cell(key):
        """A cell attribute painted over the cell's pixels (0 on background)."""
        return np.concatenate([[0.0], cells[key]]).astype(np.float32)[owner + 1][cell_labels]

    chromatin = _noise_texture(rng, shape, 0.8 * px)
    granules = _noise_texture(rng, shape, 0.6 * px)
    psf = 0.5 * px

    dapi = nucleus_profile * per_cell("dapi") * (1.0 + 0.3 * chromatin) * in_nucleus
    cytoplasm = (0.35 + 0.65 * cell_profile) * in_cell * (1.0 - 0.45 * in_nucleus)
    fitc = cytoplasm * per_cell("fitc") * (1.0 + 0.25 * granules)
    foci = ndi.gaussian_filter(_foci_image(cells, nucleus_labels, shape, rng), 0.5 * px) * (
        2 * np.pi * (0.5 * px) ** 2
    )
    cy5 = foci + nucleus_profile * per_cell("pan_nuclear") * in_nucleus

    thickness = per_cell("height") * (
        0.6 * cell_profile + 0.5 * nucleus_profile + 0.08 * granules * in_cell
    )
    halo = ndi.gaussian_filter(thickness, 1.0 * px) - ndi.gaussian_filter(thickness, 4.0 * px)
    defocused = ndi.gaussian_filter(thickness, 1.5 * px)
    yy, xx = (
        axis.astype(np.float32) for axis in np.ogrid[-1 : 1 : shape[0] * 1j, -1 : 1 : shape[1] * 1j]
    )
    a = rng.normal(0.0, optics.illumination, 4)
    illumination = 1.0 + a[0] * yy + a[1] * xx + a[2] * yy * xx + a[3] * (yy**2 + xx**2)
    bf = illumination * (1.0 + 0.9 * halo - 0.12 * defocused)
    if optics.defocus_um > 0:
        bf = ndi.gaussian_filter(bf, optics.defocus_um * px)

    # Each stain's camera background and gain (counts), the gain times the plate's staining.
    stains = zip((dapi, fitc, cy5), (300.0, 400.0, 200.0), (9000.0, 5000.0, 6000.0), intensity)
    image = np.stack(
        [as_uint16(_detect(bf, 0.0, 18000.0, 60.0, rng))]
        + [
            as_uint16(_detect(ndi.gaussian_filter(signal, psf), background, gain * k, 20.0, rng))
            for signal, background, gain, k in stains
        ]
    )
    return image, np.stack([nucleus_labels, cell_labels])


# --------------------------------------------------------------------------- plates and stores


def field_table(cell_type: str, config: dict, fields_per_well: int | None = None) -> pd.DataFrame:
    """Every field of every synthetic plate of a cell type, with its phenotype, toxicity and its
    well's variation (:func:`vsgrid.data.plates.well_effects`; ``fields_per_well`` defaults to the
    data's)."""
    synthetic, rule = config["data"]["synthetic"], config["data"]["phenotype_rule"]
    layout = synthetic_layout()
    layout["phenotype"] = label_phenotypes(layout["compound"], layout["concentration"], **rule)
    model = toxicity_model(config["data"]["seed"])
    layout["toxicity"] = [
        toxicity(c, x, model) for c, x in zip(layout["compound"], layout["concentration"])
    ]
    plates = pd.DataFrame(
        {"plate": [f"{cell_type}-P{p + 1:02d}" for p in range(synthetic["plates_per_cell_type"])]}
    )
    fields = pd.DataFrame(
        {"field": np.arange(1, (fields_per_well or synthetic["fields_per_well"]) + 1)}
    )
    wells = plates.merge(layout, how="cross")
    effects = well_effects(
        wells, seed=config["data"]["seed"], cell_type=cell_type, **synthetic["variation"]
    )
    table = wells.join(effects).merge(fields, how="cross")
    table.insert(0, "cell_type", cell_type)
    return table


@dataclass(frozen=True)
class Field:
    """One field to render, and where it goes: split and index in the store being built."""

    store: Path
    split: str
    index: int
    plate: str
    well: str
    field: int
    compound: str
    toxicity: float
    density_factor: float
    intensity: tuple[float, float, float]


def render_one(
    field: Field, seed: int, cell_type: str, profile: Profile, shape, pixel_size_um, optics
) -> tuple[np.ndarray, np.ndarray]:
    """One field of a plate, ``image`` (4, H, W) and ``masks`` (2, H, W), from its own stream."""
    rng = rng_for(seed, "field", cell_type, field.plate, field.well, int(field.field))
    cells = sample_cells(
        rng,
        profile,
        field.toxicity,
        shape,
        pixel_size_um,
        density=field.density_factor,
        states=mechanism(field.compound),
    )
    return render_field(cells, shape, pixel_size_um, rng, optics, intensity=field.intensity)


def _render_into(job: tuple[Field, int, str, Profile, tuple[int, int], float, Optics]) -> None:
    """Render one field and write it into the store being built: a worker writes its own field
    (one file each), so nothing but the job itself travels between processes."""
    field = job[0]
    image, masks = render_one(*job)
    group = zarr.open_group(field.store, mode="r+")
    group[field.split][field.index] = image
    group[f"{field.split}_masks"][field.index] = masks


def _render_store(
    path: Path,
    splits: dict[str, pd.DataFrame],
    cell_type: str,
    attrs: dict,
    config: dict,
    optics: Optics,
    executor,
    progress: bool,
) -> Path:
    """Render the fields of ``splits`` (tables of fields per split) into a new store at ``path``.

    Memory does not grow with the number of fields: each field is rendered and written by one
    worker, and only small job descriptions are queued.
    """
    data, synthetic = config["data"], config["data"]["synthetic"]
    metadata = pd.concat(
        [frame.assign(split=split, index=np.arange(len(frame))) for split, frame in splits.items()]
    )
    metadata = metadata[["split", "index", *next(iter(splits.values())).columns]]
    shape = (synthetic["field_size"],) * 2
    profile = Profile(**synthetic["cell_types"][cell_type])
    provenance = {
        "source": "synthetic",
        "seed": data["seed"],
        "vsgrid": __version__,
        "profile": vars(profile),
        "optics": vars(optics),
        "variation": synthetic["variation"],
    }
    attrs = {
        **attrs,
        "cell_type": cell_type,
        "pixel_size_um": synthetic["pixel_size_um"],
        "provenance": provenance,
    }
    with create_store(
        path, {s: len(f) for s, f in splits.items()}, shape, metadata, attrs, with_masks=True
    ) as group:
        where = Path(group.store.root)
        common = (data["seed"], cell_type, profile, shape, synthetic["pixel_size_um"], optics)
        columns = ["plate", "well", "field", "compound", "toxicity", "density_factor"]
        jobs = [
            (Field(where, split, i, *row[:6], tuple(row[6:])), *common)
            for split, frame in splits.items()
            for i, row in enumerate(frame[[*columns, *INTENSITY_COLUMNS]].itertuples(index=False))
        ]
        done = (
            executor.map(_render_into, jobs, chunksize=4) if executor else map(_render_into, jobs)
        )
        for _ in tqdm(
            done, total=len(jobs), desc=attrs["data_set"], disable=not progress, unit="field"
        ):
            pass
    return path


def build_store(
    data_set: DataSet, config: dict, out_dir: Path, executor=None, progress: bool = True
) -> Path:
    """Render the sampled fields of one (cell type, phenotype) and write its store atomically."""
    data, synthetic = config["data"], config["data"]["synthetic"]
    table = field_table(data_set.cell_type, config)
    table = table[table["phenotype"].isin(data_set.phenotypes)]
    splits = sample_splits(
        table,
        data["splits"],
        data["test_plates"],
        data["seed"],
        data_set.twin.name,
        test_unit=data["test_sampling"],
    )
    optics = Optics()
    if data_set.acquisition:  # a control: its twin's test fields through other optics
        splits = {"test": splits["test"]}
        optics = Optics(**synthetic["acquisitions"][data_set.acquisition])
    attrs = {"data_set": data_set.name, "phenotype": data_set.phenotype}
    return _render_store(
        store_path(out_dir, data_set.name),
        splits,
        data_set.cell_type,
        attrs,
        config,
        optics,
        executor,
        progress,
    )


def screen_fields(cell_type: str, config: dict) -> dict[str, pd.DataFrame]:
    """The fields of a cell type's synthetic screen store (:func:`vsgrid.data.splits.screen_splits`)
    from its plates, its fields per well each (:func:`vsgrid.grid.screen_fields_per_well`)."""
    screen, rule = config["evaluation"]["screen"], config["data"]["phenotype_rule"]
    return screen_splits(
        field_table(cell_type, config, screen_fields_per_well(config, cell_type)),
        config["data"]["test_plates"],
        controls=[*rule["negative_controls"], *rule["positive_controls"]],
        compounds=screen["compounds"],
        forest_fields=screen["forest_fields"],
    )


def build_screen_store(
    cell_type: str, config: dict, out_dir: Path, executor=None, progress: bool = True
) -> Path:
    """Render a cell type's screen (:func:`screen_fields`) into its store under ``out_dir``, with
    each compound's true EC50 (uM) in its attributes."""
    truth = {name: ec50 for name, (ec50, _, _) in toxicity_model(config["data"]["seed"]).items()}
    attrs = {"data_set": screen_data_set(cell_type), "phenotype": "screen", "true_ec50_um": truth}
    return _render_store(
        screen_store_path(out_dir, cell_type),
        screen_fields(cell_type, config),
        cell_type,
        attrs,
        config,
        Optics(),
        executor,
        progress,
    )


def pool(config: dict, workers: int | None):
    """``workers`` rendering processes (default ``data.synthetic.workers``; 0 = one per core this
    process may use, 1 = render in this process)."""
    workers = workers if workers is not None else config["data"]["synthetic"]["workers"]
    workers = workers or len(os.sched_getaffinity(0))  # the cores this job may use, not the node's
    return nullcontext() if workers == 1 else ProcessPoolExecutor(max_workers=workers)


def synthesize(
    config: dict, out_dir: str | Path, workers: int | None = None, progress: bool = True
) -> list[Path]:
    """Build one store per (cell type, phenotype) of the grid under ``out_dir``."""
    with pool(config, workers) as executor:
        return [
            build_store(d, config, Path(out_dir), executor, progress)
            for d in test_sets(config["grid"])
        ]
