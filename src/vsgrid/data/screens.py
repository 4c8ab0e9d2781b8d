"""Level 4's screen stores, one per cell type: rendered from the synthetic plates, or read from
the user's own (``data.source``)."""

from __future__ import annotations

from pathlib import Path

from vsgrid.errors import VsgridError


def build_screen_stores(
    config: dict,
    out_dir: str | Path,
    cell_types: list[str],
    workers: int | None = None,
    progress: bool = True,
) -> list[Path]:
    """Build the screen store of each of ``cell_types`` under ``out_dir``: its held-out plates
    whole and control wells of its other plates (:func:`vsgrid.data.splits.screen_splits`)."""
    unknown = [c for c in cell_types if c not in config["grid"]["cell_types"]]
    if unknown:
        raise VsgridError(
            f"--cell-type {unknown[0]!r} is not in grid.cell_types "
            f"({', '.join(config['grid']['cell_types'])})"
        )
    if config["data"]["source"] == "synthetic":
        from vsgrid.data.synthetic import build_screen_store, pool

        with pool(config, workers) as executor:
            return [
                build_screen_store(c, config, Path(out_dir), executor, progress) for c in cell_types
            ]
    from vsgrid.data.ingest import build_screen_store

    return [build_screen_store(c, config, Path(out_dir), progress) for c in cell_types]
