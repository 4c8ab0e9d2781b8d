"""vsgrid: does virtual staining generalize? A train x test grid of Pix2PixHD models, scored at three levels."""

__version__ = "0.1.0"
