"""Stage 3, evaluation: segmentation, features, feature selection and the scores of one run."""
