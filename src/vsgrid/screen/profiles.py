"""Level 4's profile-level agreement: does a virtual stain's well profile say what the real one's does?

A screen that profiles (rather than reads one number per well) normalizes each plate against its
own DMSO wells and asks which treatments move the profile away from DMSO. Here, as profiling
pipelines do it:

- **normalization** (pycytominer ``normalize``, ``mad_robustize``): per plate, every readout of
  a stain's per-well table minus its DMSO median over 1.4826 x MAD (:data:`vsgrid.stats.MAD_TO_SD`),
  the real stain and each virtual one against their own DMSO wells. A readout without spread over
  a plate's DMSO wells (MAD 0) or without a DMSO value has no such scale: it leaves the profile
  with its reason (pycytominer would divide by 1e-18 instead). A readout is in the profile only
  where every stain of the comparison normalizes it, so that real and virtual profiles have the
  same columns. The decisions' hit calls and Hill fits read these normalized readouts too (a hit
  is ``hit_sd`` robust SDs from its own plate's DMSO, which pooling plates needs); on one plate
  they are an affine change of the raw readout and decide exactly as it does;
- **feature selection** (pycytominer ``feature_select``: ``drop_na_columns``,
  ``variance_threshold``, ``correlation_threshold``) on the real stain's normalized profiles, the
  same columns for the virtual ones;
- **activity** (copairs): each treatment's (compound at a dose, or positive control) wells
  retrieve their replicates against the DMSO wells; a well's average precision (AP), a
  treatment's mean AP (mAP) with a permutation null (``NULL_SIZE``) and Benjamini-Hochberg
  q-values over the treatments: ``activity_map`` (mean mAP over the treatments) and
  ``active_fraction`` (the share with q < ``Q_THRESHOLD``), of the virtual profiles and of the
  real ones (``_real``), and ``activity_map_gap`` (virtual - real, paired);
- **retrieval** (copairs): each virtual well as the query among the real wells of every
  treatment and of DMSO, its positives the real wells of its own treatment: ``retrieval_map``,
  the mean over treatments of their wells' AP.

Distances are Euclidean, in DMSO robust SDs, rather than copairs' default cosine: a level-4
profile has a handful of readouts (one for a one-readout screen), where a cosine reads only a
direction (in one dimension, a sign) and DMSO wells near the origin point anywhere; a distance in
robust SDs is the hit rule's own scale.

CIs: each query well's AP is computed once on the plate and the resamples
(:meth:`~vsgrid.screen.plate.Plate.resamples`, within each plate, compound and
concentration: within each treatment) draw the query wells' APs, never duplicated wells into copairs (a duplicated well
retrieves its own copy at distance 0). The CI therefore says how much the mean over treatments
depends on which replicate wells were drawn, the retrieval lists held at the plate's.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from vsgrid.screen.metrics import Metric, Missing
from vsgrid.screen.plate import EDGE_BIAS, Plate, control_wells

log = logging.getLogger(__name__)

PROFILE = "profile"  # the readout column of the profile metrics in the screen table
NULL_SIZE = 10_000  # copairs' null permutations: p down to 1e-4, q < 0.05 over 500 treatments
Q_THRESHOLD = 0.05  # a treatment is active when its mAP's BH q-value is below this
DISTANCE = "euclidean"  # see the module docstring
NULL_SEED = 0
# pycytominer feature_select's operations, in the order they run, and what each drop means
SELECTION = {
    "drop_na_columns": "more than 5 % of the real stain's wells without a value",
    "variance_threshold": "(nearly) constant over the real stain's wells",
    "correlation_threshold": "correlated above 0.9 with another readout of the real stain",
}
METRICS = (
    "activity_map",
    "activity_map_real",
    "activity_map_gap",
    "active_fraction",
    "active_fraction_real",
    "retrieval_map",
)


def _pycytominer():
    """pycytominer, imported where it is used (its import sets a pandas option that pandas 3
    deprecates, with a warning that says nothing about this project)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The 'mode.copy_on_write' option")
        import pycytominer
    return pycytominer


@dataclass(frozen=True)
class Normalization:
    """Every stain's per-well table normalized per plate (``frames``: ``"real"`` and each model's
    name -> the well columns and every readout it normalizes) and the readouts some stain cannot
    normalize, with why (``dropped``): neither the decisions nor the profile read those
    normalized."""

    frames: dict[str, pd.DataFrame]
    dropped: dict[str, str]


def normalized(
    wells: pd.DataFrame, columns: list[str], negative: np.ndarray, *, stain: str
) -> tuple[pd.DataFrame, dict[str, str]]:
    """``wells``' readouts ``columns`` robust-z-scored per plate against the plate's DMSO wells
    (``negative``, a mask over the rows) with pycytominer, and the readouts that cannot be, with
    why (``stain`` names the table there); those are left as they are in the frame. Raises
    :class:`Missing` for a plate without DMSO wells."""
    normalize = _pycytominer().normalize
    dropped: dict[str, str] = {}
    frames = []
    negative = pd.Series(np.asarray(negative, bool), index=wells.index)
    for plate, rows in wells.groupby("plate", sort=False):
        dmso = rows[negative[rows.index]]
        if dmso.empty:
            raise Missing(f"plate {plate} has no DMSO wells: no readout can be normalized")
        for column, values in dmso[columns].items():
            values = values.to_numpy(np.float64)
            values = values[np.isfinite(values)]
            if column in dropped:
                continue
            if not len(values):
                dropped[column] = f"no DMSO well on plate {plate} has a value in the {stain} stain"
            elif not np.median(np.abs(values - np.median(values))) > 0:
                dropped[column] = (
                    f"no spread over plate {plate}'s DMSO wells in the {stain} stain (MAD 0)"
                )
        scaled = [c for c in columns if c not in dropped]
        frames.append(
            normalize(
                rows.assign(dmso=negative[rows.index]),
                features=scaled,
                meta_features=[c for c in rows.columns if c not in scaled] + ["dmso"],
                samples="dmso",
                method="mad_robustize",
            ).drop(columns="dmso")
            if scaled
            else rows
        )
    frame = pd.concat(frames).loc[wells.index, list(wells.columns)]
    return frame, dropped


def normalized_tables(
    real: pd.DataFrame, virtual: dict[str, pd.DataFrame], plate: Plate, columns: list[str]
) -> Normalization | Missing:
    """The real stain's and every model's tables normalized per plate (:func:`normalized`;
    ``plate``: the design of every well of ``real``), or :class:`Missing` with the reason."""
    if edge := plate.dmso_edge():
        return Missing(f"every DMSO well lies on one edge ({edge}): {EDGE_BIAS}")
    tables = {"real": real, **virtual}
    frames, dropped = {}, {}
    try:
        for name, wells in tables.items():
            stain = "real" if name == "real" else f"{name} virtual"
            frames[name], why = normalized(wells, columns, plate.negative, stain=stain)
            dropped.update({c: w for c, w in why.items() if c not in dropped})
    except Missing as reason:
        return reason
    # a readout one stain cannot normalize is normalized in none: every stain's frame holds it as
    # measured (never pycytominer's inf), and the profile leaves it out
    for name, wells in tables.items():
        if dropped:
            frames[name][list(dropped)] = wells[list(dropped)].to_numpy()
    for column, why in dropped.items():
        log.info("%s is read as measured, not normalized: %s", column, why)
    return Normalization(frames, dropped)


def selected_columns(real: pd.DataFrame, columns: list[str]) -> tuple[list[str], dict[str, str]]:
    """The profile's columns: pycytominer's feature selection (``SELECTION``) on the real stain's
    normalized ``columns``, and why each other column left."""
    feature_select = _pycytominer().feature_select
    kept, dropped = list(columns), {}
    for operation, why in SELECTION.items():
        if not kept or (len(kept) < 2 and operation == "correlation_threshold"):
            continue  # nothing left to select from; one readout correlates with nothing
        frame = feature_select(real[kept], features=list(kept), operation=operation)
        dropped.update({c: why for c in kept if c not in frame.columns})
        kept = [c for c in kept if c in frame.columns]
    return kept, dropped


@dataclass(frozen=True)
class Profiles:
    """The normalized profiles of a screen's wells that have every profile column in every stain
    (their design ``plate``): ``real`` and ``virtual`` (model name -> its profile) as arrays
    (wells, columns), the profile's ``columns`` and the readouts left out, with why
    (``dropped``)."""

    plate: Plate
    real: np.ndarray
    virtual: dict[str, np.ndarray]
    columns: list[str]
    dropped: dict[str, str]


def build_profiles(
    tables: Normalization | Missing, plate: Plate, columns: list[str]
) -> Profiles | Missing:
    """The profiles of the normalized ``tables`` (``plate``: the design of all their wells) over
    the readouts ``columns`` that every stain normalizes and feature selection keeps, or
    :class:`Missing` with the reason there is none."""
    if isinstance(tables, Missing):
        return tables
    dropped = dict(tables.dropped)
    common = [c for c in columns if c not in dropped]
    if not common:
        return Missing(f"no readout can be normalized ({_listed(dropped)})")
    kept, unselected = selected_columns(tables.frames["real"], common)
    dropped.update(unselected)
    for column, why in unselected.items():
        log.info("profile: %s left out by feature selection: %s", column, why)
    if not kept:
        return Missing(f"no readout is left in the profile ({_listed(dropped)})")
    arrays = {name: f[kept].to_numpy(np.float64) for name, f in tables.frames.items()}
    design, usable = plate.valued(arrays)
    real = arrays.pop("real")[usable]
    return Profiles(design, real, {n: a[usable] for n, a in arrays.items()}, kept, dropped)


def _listed(dropped: dict[str, str]) -> str:
    return "; ".join(f"{column}: {why}" for column, why in dropped.items())


# --------------------------------------------------------------------------- copairs


def _treatments(plate: Plate) -> np.ndarray:
    """Each well's treatment label: its compound and concentration."""
    wells = plate.wells
    return (wells["compound"].astype(str) + " @ " + wells["concentration"].astype(str)).to_numpy()


def _average_precision(meta: pd.DataFrame, feats: np.ndarray, **rules) -> pd.DataFrame:
    from copairs.map import average_precision

    return average_precision(meta, feats, distance=DISTANCE, progress_bar=False, **rules)


@dataclass(frozen=True)
class Activity:
    """Per treatment (compound at a dose, or positive control) with two replicate wells or more:
    its query wells' APs against DMSO, and the null distribution of its mAP."""

    wells: list[np.ndarray]  # per treatment, its query wells' positions on the plate
    ap: np.ndarray  # per well of the plate, its AP (NaN for a well that is no query)
    null: np.ndarray  # (treatments, NULL_SIZE), each sorted
    labels: list[str]
    single: list[str]  # treatments with one replicate well: no mAP


def activity(plate: Plate, profile: np.ndarray) -> Activity:
    """The activity retrieval of ``profile`` (wells, columns) on ``plate``: each treated well
    ranks its replicates against the DMSO wells. Raises :class:`Missing` without DMSO wells or
    without a treatment of two replicates."""
    from copairs.compute import get_null_dists

    if not plate.negative.any():
        raise Missing(
            f"{plate.without('negative', control_wells(plate.settings, 'negative'))}: "
            "no treatment can be retrieved against them"
        )
    treated, negative = plate.treated, plate.negative
    labels = _treatments(plate)
    groups = pd.Series(np.flatnonzero(treated)).groupby(labels[treated], sort=True)
    single = [label for label, rows in groups if len(rows) < 2]
    replicated = {label: rows.to_numpy() for label, rows in groups if len(rows) >= 2}
    if not replicated:
        raise Missing(
            f"every treatment has one replicate well ({len(single)} treatments): a mAP needs "
            "two wells of a treatment or more"
        )
    members = np.flatnonzero(treated | negative)
    # copairs' reference index: every DMSO well its own, so that DMSO wells are never each
    # other's positives and a treated well's negatives are exactly the DMSO wells
    reference = np.where(negative, np.arange(len(negative)), -1)[members]
    meta = pd.DataFrame({"treatment": labels[members], "reference": reference})
    scores = _average_precision(
        meta,
        profile[members],
        pos_sameby=["treatment", "reference"],
        pos_diffby=[],
        neg_sameby=[],
        neg_diffby=["treatment", "reference"],
    )
    ap = np.full(len(negative), np.nan)
    queries = (scores["n_pos_pairs"] > 0).to_numpy()
    ap[members[queries]] = scores.loc[queries, "average_precision"].to_numpy()
    confs = scores.loc[queries, ["n_pos_pairs", "n_total_pairs"]].to_numpy()
    unique, inverse = np.unique(confs, axis=0, return_inverse=True)
    with tempfile.TemporaryDirectory() as cache:  # copairs caches under ~ otherwise
        dists = get_null_dists(unique, NULL_SIZE, NULL_SEED, cache_dir=cache, progress_bar=False)
    conf_of = np.full(len(negative), -1)
    conf_of[members[queries]] = inverse.ravel()
    # a treatment's wells share one configuration (replicates - 1 positives, the DMSO wells
    # negatives), so its null is the same for every resample of its wells
    null = np.sort([dists[conf_of[rows]].mean(0) for rows in replicated.values()], axis=1)
    return Activity(list(replicated.values()), ap, null, list(replicated), single)


def treatment_map(ap: np.ndarray, wells: list[np.ndarray], index: np.ndarray) -> np.ndarray:
    """Per resample (rows of ``index``) and group of ``wells``: the mean AP of the wells the
    resample draws in the group's places (resamples, groups)."""
    return np.stack([ap[index[:, rows]].mean(1) for rows in wells], axis=1)


def activity_metrics(found: Activity, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per resample: the mean mAP over the treatments and the share called active (copairs'
    p-value, (null above + 1) / (null size + 1), then Benjamini-Hochberg over the treatments)."""
    from copairs.map import apply_fdr_correction

    maps = treatment_map(found.ap, found.wells, index)
    above = np.stack(
        [NULL_SIZE - np.searchsorted(null, m, side="right") for null, m in zip(found.null, maps.T)],
        axis=1,
    )
    p = (above + 1) / (NULL_SIZE + 1)
    active = np.array(
        [
            (
                apply_fdr_correction(pd.DataFrame({"p_value": row}))["corrected_p_value"]
                < Q_THRESHOLD
            ).mean()
            for row in p
        ]
    )
    return maps.mean(1), active


def retrieval(plate: Plate, real: np.ndarray, virtual: np.ndarray) -> tuple[np.ndarray, list]:
    """Each virtual well's AP as the query among the real wells of every treatment and of DMSO,
    its positives the real wells of its own treatment (NaN for a well that is no query), with
    the groups of query wells per treatment."""
    members = np.flatnonzero(plate.treated | plate.negative)
    labels = _treatments(plate)[members]
    meta = pd.DataFrame(
        {
            "treatment": np.concatenate([labels, labels]),
            "source": ["virtual"] * len(members) + ["real"] * len(members),
        }
    )
    scores = _average_precision(
        meta,
        np.concatenate([virtual[members], real[members]]),
        pos_sameby=["treatment"],
        pos_diffby=["source"],
        neg_sameby=[],
        neg_diffby=["treatment", "source"],
    )
    ap = np.full(len(plate.wells), np.nan)
    ap[members] = scores["average_precision"].to_numpy()[: len(members)]
    groups = pd.Series(members).groupby(labels, sort=True)
    return ap, [rows.to_numpy() for _, rows in groups]


def profile_decisions(
    profiles: Profiles | Missing, names: list[str], index: np.ndarray
) -> tuple[dict[str, dict[str, Metric | Missing]], str]:
    """Per model of ``names``: its profile metrics (``METRICS``) against the real stain's, per
    resample (``index`` from ``profiles.plate``: row 0 the plate), each a :class:`Metric` or a
    :class:`Missing` with its reason; and what the activity metrics leave out (:func:`single_note`)."""
    if isinstance(profiles, Missing):
        return {name: dict.fromkeys(METRICS, profiles) for name in names}, ""
    plate = profiles.plate
    try:
        real = activity(plate, profiles.real)
        map_real, active_real = activity_metrics(real, index)
    except Missing as reason:
        real = reason
    retrievable = len(set(_treatments(plate)[plate.treated | plate.negative])) >= 2
    out = {}
    for name in names:
        virtual = profiles.virtual[name]
        metrics: dict[str, Metric | Missing] = {}
        try:
            if isinstance(real, Missing):
                raise real
            map_virtual, active = activity_metrics(activity(plate, virtual), index)
            metrics.update(
                activity_map=_metric(map_virtual),
                activity_map_real=_metric(map_real),
                activity_map_gap=_metric(map_virtual - map_real),
                active_fraction=_metric(active),
                active_fraction_real=_metric(active_real),
            )
        except Missing as reason:
            metrics.update(dict.fromkeys(METRICS[:5], reason))
        if retrievable:
            ap, groups = retrieval(plate, profiles.real, virtual)
            metrics["retrieval_map"] = _metric(treatment_map(ap, groups, index).mean(1))
        else:
            metrics["retrieval_map"] = Missing(
                "fewer than two treatments (DMSO counted): nothing to retrieve against"
            )
        out[name] = metrics
    return out, single_note(real)


def _metric(values: np.ndarray) -> Metric:
    """A profile metric per resample: every resample draws replicates of every treatment it
    uses (resamples keep each treatment's wells), so each has a value."""
    return Metric.of(values, (~np.isfinite(values), "draw no value"))


def single_note(real: Activity | Missing) -> str:
    """What the activity metrics leave out: the treatments with one replicate well ('' if none)."""
    if isinstance(real, Missing) or not real.single:
        return ""
    shown = ", ".join(real.single[:3]) + (", ..." if len(real.single) > 3 else "")
    return (
        f"mean over {len(real.labels)} of {len(real.labels) + len(real.single)} treatments; "
        f"{len(real.single)} with one replicate well have no mAP ({shown})"
    )
