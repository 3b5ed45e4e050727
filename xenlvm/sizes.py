"""Byte counts as a person reads them."""

from __future__ import annotations


def human_size(size: int) -> str:
    """Given a byte count, return it in B, KiB, MiB, GiB or TiB with one decimal (B whole)."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{size} B"
        value /= 1024
    return f"{size} B"
