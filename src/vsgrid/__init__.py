"""vsgrid: does virtual staining generalize? A train x test grid of Pix2PixHD models, scored at three levels."""

import os
from pathlib import Path

__version__ = "0.1.0"

# Numba compiles vsgrid's and cp_measure's kernels once per machine, not once per process, when it
# can cache them; the default cache beside the package may not be writable. Set before any
# submodule imports numba.
os.environ.setdefault("NUMBA_CACHE_DIR", str(Path.home() / ".cache" / "vsgrid" / "numba"))
