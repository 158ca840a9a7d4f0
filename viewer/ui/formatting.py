"""How DICOM values read in the window's lists, overlays and sentences: dates as 2024-06-01, person names without
their ^ separators.  A value of another shape is shown as it is."""

from __future__ import annotations


def format_date(value: str) -> str:
    """A DICOM DA (YYYYMMDD) as YYYY-MM-DD; anything else unchanged."""
    value = str(value or "").strip()
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}" if len(value) == 8 and value.isdigit() else value


def format_name(value: str) -> str:
    """A DICOM PN ("Doe^John") as words ("Doe John")."""
    return str(value or "").replace("^", " ").strip()
