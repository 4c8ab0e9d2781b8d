"""Stage 4, report: the grid's tables (deltas against baselines) and the paper's figures."""
