"""Numbers as status, progress and plans show them: shares done, times in a unit that fits,
costs (no sinter here: the CLI imports it for every command)."""

from __future__ import annotations

import math


def percent(fraction: float) -> str:
    """A share done, rounded down (99.9% is "99%", never "100%" before it is done).

    >>> percent(0.999), percent(1.0), percent(0.5)
    ('99%', '100%', '50%')
    """
    return f"{math.floor(fraction * 100 + 1e-9):.0f}%"


def duration(seconds: float | None) -> str:
    """A time in the unit that fits it: s, min, h or days.

    >>> duration(None), duration(0.25), duration(42), duration(600), duration(3 * 3600)
    ('-', '0.2 s', '42 s', '10.0 min', '3.0 h')
    >>> duration(5 * 86400)
    '5.0 days'
    """
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def money(amount: float) -> str:
    """A cost with two decimals; below a cent it says so.

    >>> money(12.345), money(0.004), money(0)
    ('12.35', 'below 0.01', '0.00')
    """
    if 0 < amount < 0.005:
        return "below 0.01"
    return f"{amount:,.2f}"


__all__ = ["duration", "money", "percent"]
