"""RLE Lossless and whatever else pydicom has a decoder for (colour, palettes, unusual bit depths)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import pixel_array

from ...errors import NotClassifiable, Reason
from ..attributes import attribute

if TYPE_CHECKING:
    from ..geometry import Geometry


def pydicom_frame_or_unsupported(ds: Dataset, g: Geometry) -> np.ndarray:
    try:
        return pixel_array(ds, index=g.frame_index if g.frames > 1 else None)
    except (NotImplementedError, RuntimeError) as exc:
        if "No pixel data decoders" in str(exc) or "not supported" in str(exc).lower() or isinstance(exc, NotImplementedError):
            raise NotClassifiable(
                Reason.UNSUPPORTED_TRANSFER_SYNTAX,
                f"{attribute('TransferSyntaxUID')} {g.transfer_syntax} ({g.transfer_syntax.name}) has no decoder here",
            ) from exc
        raise
