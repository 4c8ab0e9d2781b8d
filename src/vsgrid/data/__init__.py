"""Stage 1, data: plates (synthetic or ingested) into one Zarr store per (cell type, phenotype)."""
