"""What the benchmarks share: their results as CSV text."""

from __future__ import annotations

import csv
import io


def csv_text(rows: list[dict]) -> str:
    """``rows`` (dicts with the same keys, in order) as CSV with a header line."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
