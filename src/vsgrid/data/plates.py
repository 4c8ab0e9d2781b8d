"""Plates, wells and the paper's phenotype rule.

Shared by the synthetic generator (which lays out its own plates) and by ``vsgrid ingest`` (which
reads a user's plate map): both label every well with the same rule.
"""

from __future__ import annotations

import string

import numpy as np
import pandas as pd

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


def well_name(row: int, column: int) -> str:
    """Zero-based (row, column) -> ``A01`` ... ``P24``."""
    return f"{string.ascii_uppercase[row]}{column + 1:02d}"


def normalize_well(well: str) -> str:
    """``a1``, ``A1`` and ``A01`` all name the same well: return ``A01``."""
    well = str(well).strip().upper()
    if len(well) < 2 or not well[0].isalpha() or not well[1:].isdigit():
        raise ValueError(f"{well!r} is not a well name like A01")
    return f"{well[0]}{int(well[1:]):02d}"


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


def toxicity(compound: str, concentration: float, model: dict) -> float:
    """Fraction of cells affected in a well, 0 for DMSO (Hill equation)."""
    if compound not in model or concentration <= 0:
        return 0.0
    ec50, hill, emax = model[compound]
    return emax / (1.0 + (ec50 / concentration) ** hill)
