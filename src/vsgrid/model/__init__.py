"""Stage 2, model: the Pix2PixHD network, its training and its inference over a test set."""
