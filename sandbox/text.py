"""Names people give (class folders, files, CSV columns, nicknames) made safe to show and to
write: the one place that strips text-direction tricks and neutralises spreadsheet formulas.

    >>> clean("cat\\u202egnp.exe")          # the override that shows it as "catexe.png"
    'catgnp.exe'
    >>> csv_cell('=HYPERLINK("http://x")')  # a spreadsheet shows it, never runs it
    '\\'=HYPERLINK("http://x")'

Never imports torch or streamlit.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from typing import Any

# Unicode's bidirectional controls (embeddings, overrides, isolates, marks): they make a name
# show in another order than it is written ("exe.png" shown for "gnp.exe").
BIDI_CONTROLS = frozenset(
    "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
)
# A cell starting with one of these is a formula to Excel, LibreOffice and Google Sheets (OWASP's
# list for CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n")


def clean(text: object) -> str:
    """`text` without bidirectional controls and other control characters (newlines and tabs
    become spaces): what a name shows is what it is."""
    out = []
    for c in str(text):
        if c in BIDI_CONTROLS:
            continue
        if c in "\n\r\t":
            out.append(" ")
        elif ord(c) < 32 or 0x7F <= ord(c) < 0xA0:
            continue
        else:
            out.append(c)
    return "".join(out)


def csv_cell(value: Any) -> Any:
    """A value for a CSV cell: text that a spreadsheet would run as a formula (or that starts
    with an apostrophe) gets a leading apostrophe, which spreadsheets show as text and
    `from_csv_cell` takes off again: a file name written this way reads back as it was.
    Numbers stay numbers."""
    if isinstance(value, str) and value.startswith((*FORMULA_STARTS, "'")):
        return "'" + value
    return value


def from_csv_cell(cell: str) -> str:
    """A text cell as `csv_cell` was given it."""
    return cell[1:] if cell.startswith("'") else cell


def csv_text(rows: Iterable[Iterable[Any]]) -> str:
    """The CSV of `rows` (a header first), every cell through `csv_cell`: how every CSV the
    project writes is made."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    # The writer quotes a cell holding "\n" (its line end) but not one holding a lone "\r",
    # which readers take as a line end too: such a row has all its text cells quoted.
    quoted = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_NONNUMERIC)
    for row in rows:
        cells = [csv_cell(v) for v in row]
        carriage = any(isinstance(c, str) and "\r" in c for c in cells)
        (quoted if carriage else writer).writerow(cells)
    return out.getvalue()


def output_key(text: str | int | None) -> str | int | None:
    """An output choice as a user types it: "" or None for the one tensor (or the one entry
    that can be scores), digits for a tuple's entry by position, a name for a dict's key or a
    named tuple's field."""
    if text is None or isinstance(text, int):
        return text
    text = str(text).strip()
    if not text:
        return None
    return int(text) if text.isdigit() else text
