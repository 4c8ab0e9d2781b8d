"""The planes of an ingest, from either source (TIFFs in :mod:`vsgrid.data.ingest`, OME-Zarr
plates in :mod:`vsgrid.data.ome_zarr`), checked from what each file declares before it is decoded."""

from __future__ import annotations

import numpy as np

from vsgrid.data.store import U16_MAX, as_uint16
from vsgrid.errors import VsgridError

# The most pixels a field may declare: 8192 x 8192, beyond any camera's field. What a file declares
# is checked before it is decoded, so a damaged or hostile one (a zlib bomb of 40,000 x 40,000
# inflates to 3.2 GB) is refused at the cost of its header; after the first field, every one must
# declare the first one's shape, which is then the limit.
MAX_PIXELS = 8192 * 8192


class FieldPlanes:
    """What every plane of an ingest must be: one 2-D plane of the first one's shape and dtype,
    uint8, uint16 or float within the 16-bit range. ``where`` names a plane in messages."""

    def __init__(self):
        self.reference: tuple[tuple[int, ...], np.dtype, str] | None = None

    @property
    def saturation(self) -> int:
        """The count a saturated pixel of these images holds: the top of their integer range."""
        dtype = self.reference[1] if self.reference else np.dtype(np.uint16)
        return int(np.iinfo(dtype).max) if dtype.kind == "u" else U16_MAX

    def declared(self, where: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
        """The shape (size-1 axes left out) and dtype a plane declares, before it is decoded."""
        if len(shape) != 2:
            raise VsgridError(f"{where} has shape {shape}; expected one 2-D plane")
        if shape[0] * shape[1] > MAX_PIXELS:
            raise VsgridError(
                f"{where} declares {shape[0]} x {shape[1]} pixels, more than the "
                f"{MAX_PIXELS:,} of any microscope field; it is damaged or not a field image"
            )
        if dtype not in (np.uint8, np.uint16) and dtype.kind != "f":
            raise VsgridError(f"{where} has dtype {dtype}; expected uint8, uint16 or float")
        if self.reference is None:
            self.reference = (shape, dtype, where)
        expected, expected_dtype, first = self.reference
        if shape != expected or dtype != expected_dtype:
            raise VsgridError(
                f"{where} is {shape} {dtype} but {first} is {expected} {expected_dtype}; "
                "all images must match"
            )

    @staticmethod
    def to_uint16(plane: np.ndarray, where: str) -> np.ndarray:
        """A decoded plane as uint16: floats must be finite and within 0..65535."""
        if plane.dtype in (np.uint8, np.uint16):
            return plane.astype(np.uint16)
        if not np.isfinite(plane).all():
            raise VsgridError(
                f"{where} contains {int((~np.isfinite(plane)).sum())} NaN or infinite pixels"
            )
        if plane.min() < 0 or plane.max() > U16_MAX:
            raise VsgridError(
                f"{where} has values in [{plane.min()}, {plane.max()}], outside the 16-bit range 0..{U16_MAX}"
            )
        return as_uint16(plane)
