"""Every CSV this app writes goes through here: text cells that a spreadsheet would run
as a formula are neutralised.

A label, token or prompt is user text; one that starts with ``=``, ``+``, ``-``, ``@``
(or a tab or carriage return, which some spreadsheets strip before looking) is written
with a leading apostrophe, which spreadsheets show as text and never evaluate ("CSV
injection"). Numbers stay numbers: a cell that parses as one (``-0.25``, ``+3e-05``) is
written as it is.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def safe_cell(value: object) -> object:
    """``value`` as a spreadsheet will read it as data, never as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES) and not _is_number(value):
        return "'" + value
    return value


def csv_text(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A CSV document (header first) with every cell passed through :func:`safe_cell`."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    for row in rows:
        writer.writerow([safe_cell(cell) for cell in row])
    return out.getvalue()
