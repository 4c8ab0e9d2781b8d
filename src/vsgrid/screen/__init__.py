"""Stage 5, screen (level 4): the decisions a screen makes from a stain, virtual against real.

Per-well profiles of each cell type's held-out plates (:mod:`~vsgrid.screen.wells`); from them,
on a plate's wells and their resamples (:mod:`~vsgrid.screen.plate`), Hill fits and EC50s
(:mod:`~vsgrid.screen.curves`), hit calls and Z' (:mod:`~vsgrid.screen.calls`), each a metric per
resample or its reason for having no value (:mod:`~vsgrid.screen.metrics`), virtual against real
(:mod:`~vsgrid.screen.decisions`); how far a virtual stain's decisions agree with the real
stain's, with CIs over wells and deltas against baselines (:mod:`~vsgrid.screen.tables`); whether
it can replace the real stain, from those CIs against margins (:mod:`~vsgrid.screen.verdicts`);
Figures 7, 8, 9 and 11 (:mod:`~vsgrid.screen.figures`).
"""
