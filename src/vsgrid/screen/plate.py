"""A screen plate's wells: what each is (DMSO, positive control, vehicle, dosed), the screen's
decision settings, and how a bootstrap resamples the wells.

A compound's well at concentration 0 holds its vehicle alone: it is neither in the compound's Hill
fit (log10 0 has no place on the curve) nor a treated well (it received no compound, so it is
never a hit), and it does not join the DMSO controls either (the plate's vehicle controls are the
named ones; a dose recorded as 0 by mistake must not move the hit threshold).

Confidence intervals resample wells within each (plate, compound, concentration)
(:meth:`Plate.resamples`), the same wells for real and virtual stains (and for a baseline model),
so the design of the plate is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from vsgrid.data.plates import NEGATIVE_CONTROLS, POSITIVE_CONTROLS, named, shared_edge
from vsgrid.errors import VsgridError
from vsgrid.screen.metrics import Missing

# evaluation.screen.hit_wells: the wells hits are called in, as a reason names them
HIT_WELLS = {"compounds": "compound wells", "treated": "treated wells"}
EDGE_BIAS = "they measure the edge effect with the untreated baseline, and every call against them is biased"


@dataclass(frozen=True)
class ScreenSettings:
    """``evaluation.screen``'s decision settings and the plate's control names."""

    hit_sd: float = 3.0
    min_concentrations: int = 4
    negative: tuple[str, ...] = NEGATIVE_CONTROLS
    positive: tuple[str, ...] = POSITIVE_CONTROLS
    hit_wells: str = "compounds"

    def __post_init__(self) -> None:
        if self.hit_wells not in HIT_WELLS:
            raise VsgridError(
                f"evaluation.screen.hit_wells: {self.hit_wells!r} is not one of {', '.join(HIT_WELLS)}"
            )

    @classmethod
    def from_config(cls, config: dict) -> ScreenSettings:
        screen, rule = config["evaluation"]["screen"], config["data"]["phenotype_rule"]
        return cls(
            screen["hit_sd"],
            screen["min_concentrations"],
            tuple(rule["negative_controls"]),
            tuple(rule["positive_controls"]),
            screen["hit_wells"],
        )

    def is_negative(self, compound: pd.Series) -> np.ndarray:
        return named(compound, self.negative)

    def is_positive(self, compound: pd.Series) -> np.ndarray:
        return named(compound, self.positive)


def _frozen(mask: np.ndarray) -> np.ndarray:
    """A cached mask, read-only so that no caller changes it for every other."""
    mask = np.asarray(mask)
    mask.flags.writeable = False
    return mask


def _stain(name: str) -> str:
    """A stain in words, from the name of its readout: 'real', or a model's name (its virtual stain)."""
    return name if name == "real" else f"{name} virtual"


@dataclass(frozen=True)
class Plate:
    """The wells of a screen plate (one row per well, in the same order for every stain):
    ``compound`` and ``concentration``, and which wells are DMSO, positive controls, treated."""

    wells: pd.DataFrame
    settings: ScreenSettings
    # The wells :meth:`valued` left out for want of a value, with the stains that lack one
    # (column ``lacking``): what explains a plate left without controls or compounds.
    left_out: pd.DataFrame | None = None

    def valued(self, values: dict[str, np.ndarray]) -> tuple[Plate, np.ndarray]:
        """The plate of the wells with a value in every stain of ``values`` ('real' or a model's
        name -> its readout per well of this plate, or its profile: wells x columns), and which
        wells those are."""
        finite = {
            name: np.isfinite(np.asarray(v, np.float64)).reshape(len(self.wells), -1).all(1)
            for name, v in values.items()
        }
        usable = np.logical_and.reduce(list(finite.values()))
        lacking = [
            [_stain(n) for n, f in finite.items() if not f[i]] for i in np.flatnonzero(~usable)
        ]
        left_out = self.wells.loc[~usable].assign(lacking=lacking).reset_index(drop=True)
        return Plate(self.wells.loc[usable].reset_index(drop=True), self.settings, left_out), usable

    def without(self, kind: str, wells: str) -> str:
        """Why the plate has no ``kind`` wells (a mask of the plate: negative, positive, called,
        dosed), ``wells`` in words: it has none, or :meth:`valued` left them all out."""
        left_out = self.left_out if self.left_out is not None else self.wells.iloc[:0]
        if self.wells.empty and len(left_out):
            lost, wells = left_out, "wells"  # no well has a value: say so, not only of these
        else:
            lost = left_out[getattr(Plate(left_out, self.settings), kind)]
        if lost.empty:
            return f"the plate has no {wells}"
        stains = sorted({stain for lacking in lost["lacking"] for stain in lacking})
        return (
            f"the readout is missing (NaN) in all {len(lost)} {wells} in the "
            f"{' and '.join(stains)} stain{'s' if len(stains) > 1 else ''}"
        )

    # The well masks are cached: every decision reads them, and each is a pandas match over the
    # wells' names, which costs more than the decision on a plate of a few hundred wells. A Plate
    # is frozen and its wells are never changed in place.
    @cached_property
    def negative(self) -> np.ndarray:
        return _frozen(self.settings.is_negative(self.wells["compound"].astype(str)))

    @cached_property
    def positive(self) -> np.ndarray:
        return _frozen(self.settings.is_positive(self.wells["compound"].astype(str)))

    @cached_property
    def names(self) -> np.ndarray:
        """Each well's compound, lower case: what a control's name is matched with."""
        return _frozen(self.wells["compound"].astype(str).str.lower().to_numpy())

    @cached_property
    def vehicle(self) -> np.ndarray:
        """A compound's wells at concentration 0: its vehicle alone (see the module docstring)."""
        at_zero = self.wells["concentration"].to_numpy(np.float64) == 0
        return _frozen(~self.negative & ~self.positive & at_zero)

    @cached_property
    def treated(self) -> np.ndarray:
        """Positive controls and compounds at a dose."""
        return _frozen(~self.negative & ~self.vehicle)

    @cached_property
    def called(self) -> np.ndarray:
        """The wells hits are called in: the compounds' dosed wells, with the positive controls
        when ``hit_wells`` is ``treated``."""
        return self.treated if self.settings.hit_wells == "treated" else self.dosed

    @cached_property
    def dosed(self) -> np.ndarray:
        """The wells of the compounds' Hill fits: neither controls nor vehicle."""
        return _frozen(~self.negative & ~self.positive & ~self.vehicle)

    def compounds(self) -> list[str]:
        """The compounds with a dose range: neither DMSO nor a positive control."""
        frame = self.wells[~self.negative & ~self.positive]
        return sorted(frame["compound"].astype(str).unique())

    def dmso_edge(self) -> str | None:
        """Where the DMSO wells of a plate (two or more, ``well`` and ``plate`` columns given)
        all lie on one edge of it, that edge: they then measure the edge effect (evaporation,
        temperature) with the untreated baseline, and every call against them is biased."""
        if "well" not in self.wells:
            return None
        dmso = self.wells[self.negative]
        plates = dmso["plate"] if "plate" in dmso else np.zeros(len(dmso))
        for plate, wells in dmso.groupby(plates, sort=True):
            if len(wells) > 1 and (edge := shared_edge(wells["well"])):
                return f"{edge} of plate {plate}" if "plate" in dmso else edge
        return None

    def strata(self) -> list[np.ndarray]:
        """Well indices per (plate, compound, concentration): what a bootstrap resamples within
        (a well stays on its plate, whose own controls its plate's Z' and calls read)."""
        keys = ["plate", "compound", "concentration"]
        groups = self.wells.groupby(keys if "plate" in self.wells else keys[1:], sort=True).indices
        return [np.asarray(v) for v in groups.values()]

    def resamples(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Row 0 the plate as it is, then ``n`` resamples of its wells within their strata: (n + 1, wells)."""
        index = np.tile(np.arange(len(self.wells)), (n + 1, 1))
        for stratum in self.strata():
            index[1:, stratum] = rng.choice(stratum, size=(n, len(stratum)), replace=True)
        return index


def plate_ids(plate: Plate) -> np.ndarray:
    """Each well's plate (its ``plate`` column; one plate without it)."""
    return plate.wells["plate"].to_numpy() if "plate" in plate.wells else np.zeros(len(plate.wells))


def control_wells(settings: ScreenSettings, kind: str) -> str:
    """The ``kind`` (negative, positive) control wells in words, with their compounds."""
    return f"{kind}-control wells ({', '.join(getattr(settings, kind))})"


def check_controls(plate: Plate) -> None:
    """Raises :class:`Missing` where the plate has no DMSO wells, or has them all on one edge."""
    if not plate.negative.any():
        raise Missing(plate.without("negative", control_wells(plate.settings, "negative")))
    if edge := plate.dmso_edge():
        raise Missing(f"every DMSO well lies on one edge ({edge}): {EDGE_BIAS}")
