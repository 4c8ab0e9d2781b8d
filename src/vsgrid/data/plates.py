"""Plates, wells and the paper's phenotype rule.

Shared by the synthetic generator (which lays out its own plates) and by ``vsgrid ingest`` (which
reads a user's plate map): both label every well with the same rule. The synthetic plates' dose
responses and well-to-well variation are drawn here too.
"""

from __future__ import annotations

import re
import string

import numpy as np
import pandas as pd

from vsgrid.data.store import CHANNELS
from vsgrid.grid import COLUMNS, NONTOXIC, ROWS, TOXIC
from vsgrid.seeds import rng_for

N_COMPOUNDS = 10
COMPOUNDS = tuple(
    f"CPD-{k + 1:02d}" for k in range(N_COMPOUNDS)
)  # the synthetic plates' test compounds
CONCENTRATIONS_UM = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
# The controls of the synthetic plates, and the phenotype rule's defaults (as in the config schema).
NEGATIVE_CONTROLS = ("DMSO",)
POSITIVE_CONTROL_DOSE_UM = {"etoposide": 10.0, "staurosporine": 1.0}
POSITIVE_CONTROLS = tuple(POSITIVE_CONTROL_DOSE_UM)
STAINS = CHANNELS[1:]
# The columns of a plate's stain intensity factors, in CHANNELS order (see well_effects).
INTENSITY_COLUMNS = tuple(f"intensity_{stain}" for stain in STAINS)


# A plate's name becomes part of file names (exported plates, tables), so it is one safe path
# component: no separator, no leading dot, no control character.
PLATE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
PLATE_NAME_RULE = "letters, digits, '.', '_' and '-', starting with a letter or digit"


def is_plate_name(name: str) -> bool:
    """Whether ``name`` is a whole plate name by :data:`PLATE_NAME` (fullmatch: ``$`` would let a
    trailing newline through)."""
    return PLATE_NAME.fullmatch(name) is not None


def named(compound: pd.Series, names) -> np.ndarray:
    """Which of ``compound`` is one of ``names`` (a control list), case-insensitively."""
    return compound.astype(str).str.lower().isin({n.lower() for n in names}).to_numpy()


def well_name(row: int, column: int) -> str:
    """Zero-based (row, column) -> ``A01`` ... ``P24``."""
    return f"{string.ascii_uppercase[row]}{column + 1:02d}"


def normalize_well(well: str) -> str:
    """``a1``, ``A1`` and ``A01`` all name the same well: return ``A01``."""
    well = str(well).strip().upper()
    if len(well) < 2 or not well[0].isalpha() or not well[1:].isdigit():
        raise ValueError(f"{well!r} is not a well name like A01")
    return f"{well[0]}{int(well[1:]):02d}"


def well_position(well: str) -> tuple[int, int]:
    """``A01`` ... ``P24`` -> zero-based (row, column): the inverse of :func:`well_name`."""
    well = normalize_well(well)
    return string.ascii_uppercase.index(well[0]), int(well[1:]) - 1


def shared_edge(wells) -> str | None:
    """The edge of the plate that every one of ``wells`` lies on (``row A``, ``row P``,
    ``column 1``, ``column 24``), or None."""
    rows, columns = np.array([well_position(w) for w in wells]).reshape(-1, 2).T
    edges = {
        "row A": rows == 0,
        f"row {string.ascii_uppercase[ROWS - 1]}": rows == ROWS - 1,
        "column 1": columns == 0,
        f"column {COLUMNS}": columns == COLUMNS - 1,
    }
    return next((name for name, on in edges.items() if len(rows) and on.all()), None)


def synthetic_layout() -> pd.DataFrame:
    """The fixed 16 x 24 layout of every synthetic plate.

    Columns 1-2 hold DMSO, column 23 etoposide and column 24 staurosporine (positive controls).
    Columns 3-22 hold 10 compounds, two columns (32 wells) each: five replicate wells at each of
    six concentrations, and two more DMSO wells.
    """
    records = []
    for column in range(COLUMNS):
        for row in range(ROWS):
            if column < 2:
                compound, concentration = NEGATIVE_CONTROLS[0], 0.0
            elif column >= COLUMNS - 2:
                compound = POSITIVE_CONTROLS[column - (COLUMNS - 2)]
                concentration = POSITIVE_CONTROL_DOSE_UM[compound]
            else:
                block = column - 2
                position = (block % 2) * ROWS + row
                if position < 5 * len(CONCENTRATIONS_UM):
                    compound = COMPOUNDS[block // 2]
                    concentration = CONCENTRATIONS_UM[position // 5]
                else:
                    compound, concentration = NEGATIVE_CONTROLS[0], 0.0
            records.append((well_name(row, column), compound, concentration))
    return pd.DataFrame.from_records(records, columns=["well", "compound", "concentration"])


def label_phenotypes(
    compound: pd.Series,
    concentration: pd.Series,
    negative_controls=NEGATIVE_CONTROLS,
    positive_controls=POSITIVE_CONTROLS,
    nontoxic_levels: int = 3,
) -> pd.Series:
    """The paper's phenotype of each well.

    Negative controls and the ``nontoxic_levels`` lowest concentrations of each compound are
    non-toxic; the higher concentrations and the positive controls are toxic. Compound names are
    compared case-insensitively; concentration levels are ranked per compound over the given wells.
    """
    names = compound.astype(str).str.strip().str.lower()
    negative = {c.lower() for c in negative_controls}
    positive = {c.lower() for c in positive_controls}
    level = concentration.groupby(names).rank(method="dense").astype(int) - 1
    toxic = names.isin(positive) | (~names.isin(negative) & (level >= nontoxic_levels))
    return pd.Series(np.where(toxic, TOXIC, NONTOXIC), index=compound.index, name="phenotype")


def toxicity_model(seed: int) -> dict[str, tuple[float, float, float]]:
    """Synthetic dose-response per compound: (EC50 in uM, Hill slope, maximal effect).

    EC50s fall between the third and fourth concentration, so that the paper's labels (three
    lowest non-toxic) agree with what the cells show, with compound-to-compound spread.
    """
    rng = rng_for(seed, "compounds")
    midpoint = np.sqrt(CONCENTRATIONS_UM[2] * CONCENTRATIONS_UM[3])
    model = {}
    for name in COMPOUNDS:
        ec50 = midpoint * float(np.exp(rng.normal(0.0, 0.35)))
        model[name] = (ec50, float(rng.uniform(1.5, 3.0)), float(rng.uniform(0.6, 0.95)))
    model["etoposide"] = (1.0, 2.0, 0.95)
    model["staurosporine"] = (0.1, 2.0, 0.97)
    return model


# What an affected cell of a compound's wells becomes: shares of (damaged, condensed, fragmented)
# cells (vsgrid.data.synthetic's states). The positive controls act as a screen chooses them to:
# etoposide, a topoisomerase II poison, arrests cells in G2 with damaged DNA; staurosporine, a
# broad kinase inhibitor, drives them into apoptosis. The test compounds mix the three.
MECHANISMS = {"etoposide": (0.85, 0.1, 0.05), "staurosporine": (0.0, 0.6, 0.4)}
MIXED_MECHANISM = (0.45, 0.35, 0.2)


def mechanism(compound: str) -> tuple[float, float, float]:
    """The shares of damaged, condensed and fragmented cells among a compound's affected cells."""
    return MECHANISMS.get(compound, MIXED_MECHANISM)


def toxicity(compound: str, concentration: float, model: dict) -> float:
    """Fraction of cells affected in a well, 0 for DMSO (Hill equation)."""
    if compound not in model or concentration <= 0:
        return 0.0
    ec50, hill, emax = model[compound]
    return emax / (1.0 + (ec50 / concentration) ** hill)


def _mean_one(z, cv: float):
    """Lognormal factors with mean 1 and coefficient of variation ``cv`` from standard normal draws
    ``z``; exactly 1 where ``cv`` is 0."""
    variance = np.log1p(cv**2)
    return np.exp(np.sqrt(variance) * z - variance / 2)


def well_effects(
    wells: pd.DataFrame,
    *,
    seed: int,
    cell_type: str,
    well_density_cv: float,
    plate_density_cv: float,
    plate_intensity_cv: float,
    edge_density_drop: float,
    gradient: float,
) -> pd.DataFrame:
    """The synthetic plates' variation at each well of ``wells`` (columns plate and well).

    ``density_factor`` multiplies the well's expected cell count: the plate's seeding (lognormal,
    mean 1, ``plate_density_cv``) x the well's (``well_density_cv``) x ``1 - edge_density_drop``
    in the outer rows and columns x a linear gradient across the plate, ``1 + gradient * u`` with
    ``u`` from -1/2 to 1/2 along a direction drawn per plate. ``intensity_<stain>`` multiplies
    each stain's signal over the whole plate (``plate_intensity_cv``; staining and illumination
    batches).

    A plate draws from its stream (seed, "plate", cell type, plate) and a well from (seed, "well",
    cell type, plate, well), so a well's factors do not depend on the other wells in ``wells``;
    the draws are the same whatever the sizes, so changing one size changes no other effect. All
    sizes 0 give factors of exactly 1. Returns a frame with the index of ``wells``.
    """
    plates = {
        plate: rng_for(seed, "plate", cell_type, plate).standard_normal(3 + len(STAINS))
        for plate in wells["plate"].unique()
    }
    plate_z = np.array([plates[plate] for plate in wells["plate"]]).reshape(-1, 3 + len(STAINS))
    well_z = np.array(
        [
            rng_for(seed, "well", cell_type, plate, well).standard_normal()
            for plate, well in zip(wells["plate"], wells["well"])
        ]
    )
    row, column = np.array([well_position(w) for w in wells["well"]]).reshape(-1, 2).T
    edge = (row == 0) | (row == ROWS - 1) | (column == 0) | (column == COLUMNS - 1)
    # The direction of a normal pair is uniform on the circle; u reaches +-1/2 at the far corners.
    direction = plate_z[:, 1:3]
    y, x = row / (ROWS - 1) - 0.5, column / (COLUMNS - 1) - 0.5
    u = (direction[:, 0] * y + direction[:, 1] * x) / np.abs(direction).sum(1)
    density = (
        _mean_one(plate_z[:, 0], plate_density_cv)
        * _mean_one(well_z, well_density_cv)
        * np.where(edge, 1.0 - edge_density_drop, 1.0)
        * (1.0 + gradient * u)
    )
    intensity = _mean_one(plate_z[:, 3:], plate_intensity_cv)
    return pd.DataFrame(
        {"density_factor": density, **dict(zip(INTENSITY_COLUMNS, intensity.T))}, index=wells.index
    )
