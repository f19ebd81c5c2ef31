"""DICOM attributes as messages name them: ``Bits Allocated (0028,0100)``, from pydicom's data dictionary."""

from __future__ import annotations

import functools

from pydicom.datadict import dictionary_description, tag_for_keyword
from pydicom.tag import Tag


@functools.cache
def attribute(keyword: str) -> str:
    """``BitsAllocated`` -> ``Bits Allocated (0028,0100)``."""
    number = tag_for_keyword(keyword)
    if number is None:  # not in pydicom's dictionary: the keyword alone still names it
        return keyword
    tag = Tag(number)
    return f"{dictionary_description(tag)} ({tag.group:04X},{tag.element:04X})"
