"""Level 4's verdict: can the virtual stain replace the real one on this screen?

Per (model type, screen, stain), on the summary readout, each decision metric's 95 % CI is held
against its margin (``evaluation.screen.margins``), an equivalence test read from the interval:
``replaceable`` when every CI lies inside its margin, ``not replaceable`` when any lies wholly
outside, otherwise ``undecided``, naming the metric that decides. A screen whose real stain has
no Z' (no positive controls, DMSO on one edge), or whose Z' CI reaches below the Z' margin, is
no validated assay: there is no decision to reproduce, and the verdict is ``undecided`` on
``z_prime_real``. A model type with several seeds is judged on every seed's CI: inside only if
each is, outside if any is. A metric without a value or a CI leaves the verdict ``undecided``
(unless another is wholly outside), naming it and why. The profile's ``activity_map_gap``
(readout ``profile``, :mod:`vsgrid.screen.profiles`) is judged with the summary readout's
metrics: its signed CI must lie within plus or minus its margin.

The controls (:mod:`vsgrid.screen.controls`) come first. Where a screen's oracle, the real stain
plus camera noise, is not replaceable, the screen cannot tell a faithful stain at these margins and
sizes: its models are left ``undecided`` on the oracle's deciding metric, and say so.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from vsgrid.grid import ORACLE, SCREEN_CONTROLS
from vsgrid.screen.assay import what_would_decide
from vsgrid.screen.profiles import PROFILE

# The side of its margin a metric must stay on: at most (an error), at least (an agreement), or
# within plus or minus it (a signed gap, whose CI is read as it is rather than folded into |gap|).
AT_MOST, AT_LEAST, WITHIN = "at most", "at least", "within +/-"
SIDES = {
    "ec50_error": AT_MOST,
    "hit_kappa": AT_LEAST,
    "z_prime": AT_LEAST,
    "z_prime_gap": AT_MOST,
    "activity_map_gap": WITHIN,
}
REPLACEABLE, NOT_REPLACEABLE, UNDECIDED = "replaceable", "not replaceable", "undecided"
KEYS = ["model_type", "control", "train_cell_type", "cell_type", "stain", "readout"]
COLUMNS = [*KEYS, "verdict", "deciding_metric", "why"]


def verdict(rows: pd.DataFrame, margins: dict[str, float]) -> tuple[str, str, str]:
    """(verdict, deciding metric, why) of one model type on one screen and readout, from its
    screen-table ``rows`` (metric, value, ci_low, ci_high, reason; one row per metric and seed)."""
    if no_assay := _no_assay(rows, margins["z_prime"]):
        return UNDECIDED, "z_prime_real", no_assay
    outside, undecided = [], []
    # SIDES' order, not the config's: the deciding metric must not hang on a file's key order.
    for metric, bound in ((m, margins[m]) for m in SIDES if m in margins):
        cis = _intervals(rows, metric)
        if cis is None:
            reasons = "; ".join(
                r for r in rows.loc[rows["metric"] == metric, "reason"].dropna() if r
            )
            undecided.append((metric, f"{metric} has no CI ({reasons or 'not computed'})"))
            continue
        low, high, shown = cis
        lowest, highest = {
            AT_MOST: (-np.inf, bound),
            AT_LEAST: (bound, np.inf),
            WITHIN: (-bound, bound),
        }[SIDES[metric]]
        if (low > highest).any() or (high < lowest).any():
            outside.append((metric, f"{metric} CI {shown} wholly outside {SIDES[metric]} {bound}"))
        elif not ((low >= lowest).all() and (high <= highest).all()):
            undecided.append((metric, f"{metric} CI {shown} crosses {SIDES[metric]} {bound}"))
    if outside:
        return NOT_REPLACEABLE, *outside[0]
    if undecided:
        return UNDECIDED, *undecided[0]
    return REPLACEABLE, "", "every CI inside its margin"


def _intervals(rows: pd.DataFrame, metric: str) -> tuple[np.ndarray, np.ndarray, str] | None:
    """A metric's CI bounds over its rows (one per seed) and how they read, or None where it has
    no row or a row without a CI."""
    found = rows[rows["metric"] == metric]
    low, high = found["ci_low"].to_numpy(float), found["ci_high"].to_numpy(float)
    if found.empty or not np.isfinite(np.concatenate([low, high])).all():
        return None
    return low, high, ", ".join(f"[{lo:.2f}, {hi:.2f}]" for lo, hi in zip(low, high))


def _no_assay(rows: pd.DataFrame, bound: float) -> str:
    """Why the screen cannot decide, when the real stain has no Z' (no positive controls, DMSO on
    one edge ...) or its Z' CI reaches below the margin: it is no validated assay, so there is no
    decision to reproduce ('' when it is, or when Z' has a value but no CI: the metrics' loop
    names that)."""
    real = rows[rows["metric"] == "z_prime_real"]
    if len(real) and real["value"].isna().all():
        reason = next((r for r in real["reason"].dropna() if r), "not computed")
        return f"the real stain has no Z' ({reason}): no assay to reproduce"
    cis = _intervals(rows, "z_prime_real")
    if cis is None or (cis[0] >= bound).all():
        return ""
    worst = real.iloc[int(np.argmin(real["ci_low"].to_numpy(float)))]
    wells = {c: worst.get(c, np.nan) for c in ("dmso_wells", "positive_wells", "plates")}
    more = what_would_decide(worst["value"], worst["ci_low"], bound, **wells)
    return f"the real stain's own Z' CI {cis[2]} reaches below {bound}: no assay to reproduce" + (
        f"; {more}" if more else ""
    )


def verdict_table(table: pd.DataFrame, margins: dict[str, float], readout: str) -> pd.DataFrame:
    """Every (model type, screen, stain)'s verdict on one ``readout`` (the summary readout) and
    its profile metrics, from the screen table's rows."""
    profile = table["readout"] == PROFILE
    summary = table[(table["readout"] == readout) | profile].assign(readout=readout)
    rows = [
        dict(zip(COLUMNS, (*key, *verdict(group, margins))))
        for key, group in summary.groupby(KEYS, sort=True, dropna=False)
    ]
    verdicts = pd.DataFrame(rows, columns=COLUMNS)
    return _unresolved(verdicts.iloc[np.argsort(control_order(verdicts), kind="stable")])


def control_order(rows: pd.DataFrame) -> np.ndarray:
    """Each row's place when the controls come first, in :data:`SCREEN_CONTROLS` order (a
    model's row, whose ``control`` is empty, after them)."""
    kinds = rows["control"].fillna("") if "control" in rows else pd.Series("", index=rows.index)
    return (
        kinds.map({c: i for i, c in enumerate(SCREEN_CONTROLS)})
        .fillna(len(SCREEN_CONTROLS))
        .to_numpy(int)
    )


def _unresolved(verdicts: pd.DataFrame) -> pd.DataFrame:
    """The verdicts, with the models of each screen whose oracle is not replaceable left
    undecided: there the instrument itself cannot tell a faithful stain."""
    verdicts = verdicts.reset_index(drop=True)
    oracles = verdicts[(verdicts["control"] == ORACLE) & (verdicts["verdict"] != REPLACEABLE)]
    for oracle in oracles.itertuples():
        models = (
            (verdicts["control"].fillna("") == "")
            & (verdicts["cell_type"] == oracle.cell_type)
            & (verdicts["stain"] == oracle.stain)
        )
        verdicts.loc[models, ["verdict", "deciding_metric", "why"]] = (
            UNDECIDED,
            oracle.deciding_metric,
            f"not judged: the instrument cannot resolve at these margins and screen sizes, its "
            f"oracle {oracle.model_type} being {oracle.verdict} on {oracle.deciding_metric} "
            f"({oracle.why})",
        )
    return verdicts
