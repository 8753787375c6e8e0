"""Whole numbers in JSON bodies: ``true`` and ``false`` are not numbers.

Pydantic's lax mode reads a boolean as 0 or 1, so ``{"overlap_s": false}`` would rotate a
signing secret with no overlap at all, and ``{"capacity": true}`` would seat one person. The
numbers of the API's bodies refuse booleans; a CSV import's text (``"8"``) still reads as a
number.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator


def _not_a_boolean(value: object) -> object:
    if isinstance(value, bool):
        raise ValueError("a number is expected, not true or false")
    return value


NotBoolean = BeforeValidator(_not_a_boolean)

# A whole number given in a JSON body.
WholeNumber = Annotated[int, NotBoolean]
