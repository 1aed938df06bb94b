"""A CSV read defensively (`workspace.tables` re-exports every name).

    >>> table = read_csv(Path("my.csv").read_bytes())     # refuses what it can't read, saying why
    >>> X, rows = table.matrix(["age", "bmi"])            # (N, 2) float64, the rows kept

A CSV is a user's upload, so nothing in it is trusted: its size is checked before it is
decoded, rows and columns are bounded, and every cell of a chosen column must be a number.
"""

from __future__ import annotations

import array
import csv
import io
import math
from dataclasses import dataclass, field

import numpy as np

MAX_BYTES = 16 * 2**20  # a CSV larger than this is refused before it is decoded
MAX_ROWS = 200_000
MAX_COLUMNS = 500
MIN_ROWS = 2  # a mean over the rows, a std and correlations need at least two
MISSING = frozenset({"", "na", "nan", "n/a", "null", "none", "?", "-"})


class TableError(ValueError):
    """A CSV this page can't use, with a message for the person who uploaded it."""


@dataclass(frozen=True)
class Column:
    """One column: its values as float64 (NaN where missing), the missing rows, and the first
    cell that is text, if any, as (row number, cell)."""

    name: str
    values: np.ndarray
    missing: np.ndarray  # row indices (0-based, data rows)
    text: tuple[int, str] | None

    @property
    def numeric(self) -> bool:
        return self.text is None


@dataclass(frozen=True)
class Table:
    columns: tuple[Column, ...]
    n_rows: int
    notes: tuple[str, ...] = field(default=())

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def numeric_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.numeric)

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise TableError(f"There is no column {name!r}; the columns are {', '.join(self.names)}.")

    def missing_rows(self, names: list[str] | tuple[str, ...]) -> np.ndarray:
        """Rows with a missing value in any of `names`."""
        rows = [self.column(n).missing for n in names]
        return np.unique(np.concatenate(rows)) if rows else np.zeros(0, dtype=np.int64)

    def matrix(
        self, names: list[str] | tuple[str, ...], *, drop_missing: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """`(N, len(names))` float64 of those columns and the data rows used (0-based).

        Refuses a column with text in it, missing values (unless `drop_missing`, which leaves
        out each row with a missing value in any chosen column), and fewer than 2 rows left."""
        if not names:
            raise TableError("Pick at least one feature column.")
        for name in names:
            c = self.column(name)
            if c.text is not None:
                row, cell = c.text
                raise TableError(
                    f"Column {name!r} has text in it ({quote(cell)} in row {row + 1}), so it "
                    "can't be a model input. Leave it out, or encode it as numbers first."
                )
        gone = self.missing_rows(names)
        if len(gone) and not drop_missing:
            counts = ", ".join(
                f"{n!r} ({len(self.column(n).missing)})"
                for n in names
                if len(self.column(n).missing)
            )
            first = ", ".join(str(r + 1) for r in gone[:5]) + (", …" if len(gone) > 5 else "")
            raise TableError(
                f"Missing values in {counts}: rows {first}. Leave those rows out (the switch "
                "below), fill them in, or leave the columns out."
            )
        keep = np.setdiff1d(np.arange(self.n_rows), gone)
        if len(keep) < MIN_ROWS:
            raise TableError(
                f"{len(keep)} usable row{'s' if len(keep) != 1 else ''}: a ranking averages "
                f"over rows, and the std and correlations need at least {MIN_ROWS}."
            )
        X = np.stack([self.column(n).values[keep] for n in names], axis=1)
        return X, keep


def quote(cell: str) -> str:
    cell = cell if len(cell) <= 30 else cell[:30] + "…"
    return repr(cell)


def _unique(names: list[str]) -> tuple[list[str], list[str]]:
    """Header names made non-empty and unique; notes on what was renamed."""
    seen: dict[str, int] = {}
    out, notes = [], []
    for i, raw in enumerate(names):
        name = raw.strip()[:100] or f"column {i + 1}"
        if name in seen:
            seen[name] += 1
            new = f"{name} ({seen[name]})"
            notes.append(f"Two columns are called {name!r}; the later one is now {new!r}.")
            name = new
        seen.setdefault(name, 1)
        out.append(name)
    return out, notes


def read_csv(data: bytes, *, max_bytes: int = MAX_BYTES, max_rows: int = MAX_ROWS) -> Table:
    """A CSV with a header row, every cell parsed as a number where it can be.

    Refused with a TableError that says why: more than `max_bytes` (checked before decoding),
    not UTF-8 text (a pickle, a ZIP or a spreadsheet uploaded as a CSV), no header or no data
    rows, more than `max_rows` rows or `MAX_COLUMNS` columns, or a row whose number of values
    differs from the header's. Text cells and missing values are recorded per column, not
    refused here: `Table.matrix` refuses them in the columns that are chosen. The delimiter
    is a comma, a semicolon or a tab, whichever the first line has most of."""
    if len(data) > max_bytes:
        raise TableError(
            f"The file is {len(data) / 2**20:.1f} MB; this page reads CSV files up to "
            f"{max_bytes / 2**20:.0f} MB. A ranking is a mean over rows, so a random sample of "
            "100,000 rows says the same."
        )
    if b"\x00" in data[:65536]:
        raise TableError(
            "This is not a text CSV file (it has binary bytes: a pickle, a ZIP or a "
            "spreadsheet?). Save the table as CSV."
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise TableError(
            f"This is not a UTF-8 text CSV file (byte {err.start} can't be decoded). Save the "
            "table as CSV in UTF-8."
        ) from None
    first = text.split("\n", 1)[0]
    delimiter = max(",;\t", key=first.count)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader, None)
        if not header or not any(h.strip() for h in header):
            raise TableError("The file is empty, or its first line (the header) is blank.")
        if len(header) > MAX_COLUMNS:
            raise TableError(f"{len(header)} columns; this page reads at most {MAX_COLUMNS}.")
        width = len(header)
        # Each cell is parsed as it is read, into its column: the file's rows are never all
        # held as text (a 16 MB CSV of short cells was ~270 MB of Python strings).
        parsed = [_Parsed() for _ in range(width)]
        n = 0
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # a blank line
            if len(row) != width:
                raise TableError(
                    f"Row {n + 1} has {len(row)} values but the header has {width} "
                    f"columns (delimiter {delimiter!r}). Is a value quoted wrongly?"
                )
            if n >= max_rows:
                raise TableError(
                    f"More than {max_rows:,} rows; this page reads at most {max_rows:,}. A "
                    "ranking is a mean over rows, so a random sample says the same."
                )
            for column, cell in zip(parsed, row, strict=True):
                column.add(n, cell)
            n += 1
    except csv.Error as err:
        raise TableError(f"This CSV can't be parsed: {err}.") from None
    if not n:
        raise TableError("The file has a header but no data rows.")
    names, notes = _unique(header)
    columns = tuple(p.column(name) for p, name in zip(parsed, names, strict=True))
    return Table(columns=columns, n_rows=n, notes=tuple(notes))


class _Parsed:
    """One column as its cells are read: float64 values (NaN where missing or text), the
    missing rows, and the first text cell."""

    def __init__(self) -> None:
        self.values = array.array("d")
        self.missing = array.array("q")
        self.text: tuple[int, str] | None = None

    def add(self, i: int, cell: str) -> None:
        cell = cell.strip()
        if cell.lower() in MISSING:
            self.values.append(math.nan)
            self.missing.append(i)
            return
        try:
            v = float(cell)
        except ValueError:
            v = math.nan
            if self.text is None:
                self.text = (i, cell[:100])
        if not math.isfinite(v) and self.text is None:  # "inf", "1e999": not a measurement
            self.text = (i, cell[:100])
        self.values.append(v if math.isfinite(v) else math.nan)

    def column(self, name: str) -> Column:
        values = np.frombuffer(self.values, dtype=np.float64)  # no copy: the array is done
        missing = np.frombuffer(self.missing, dtype=np.int64) if self.missing else np.zeros(0, int)
        return Column(name, values, missing.astype(np.int64, copy=False), self.text)
