"""Administrative division codes (GB/T 2260 + statistical township/village codes).

A county is 6 digits (``433122``), a township 9 (county + 3), a village 12 (township + 3).
Feeds pad to 12 digits with zeros (``433122000000`` is the county). A 6-digit code ending in
``00`` is a prefecture, ending in ``0000`` a province. Containment is a prefix relation on the
*significant* digits of a code, which is why all of this is plain string work.
"""

from __future__ import annotations

from typing import Literal

Level = Literal["province", "prefecture", "county", "township", "village"]

LEVELS: tuple[Level, ...] = ("province", "prefecture", "county", "township", "village")
#: the levels a contacts directory holds (contracts §1), widest first: the order of every listing
DIRECTORY_LEVELS: tuple[Level, ...] = ("county", "township", "village")
#: each level's name for people
LEVEL_ZH: dict[str, str] = dict(zip(LEVELS, ("省", "市州", "县", "乡镇", "村"), strict=True))


def normalise(raw: str) -> str | None:
    """Return the division code a geocode or CSV cell means, or None when it is not one.

    ``433122000000`` → ``433122``; ``433122101000`` → ``433122101``; ``433122101201`` unchanged;
    ``43`` → ``430000`` (province); ``4331`` → ``433100`` (prefecture).
    """
    code = raw.strip()
    if not code.isascii() or not code.isdigit():
        return None
    if len(code) == 12:
        if code.endswith("000000"):
            return code[:6]
        if code.endswith("000"):
            return code[:9]
        return code
    if len(code) in (6, 9):
        return code
    if len(code) == 2:
        return code + "0000"
    if len(code) == 4:
        return code + "00"
    return None


def level_of(code: str) -> Level:
    """The level of a normalised code."""
    if len(code) == 12:
        return "village"
    if len(code) == 9:
        return "township"
    if len(code) == 6:
        if code.endswith("0000"):
            return "province"
        if code.endswith("00"):
            return "prefecture"
        return "county"
    raise ValueError(f"not a normalised division code: {code!r}")


def significant(code: str) -> str:
    """The prefix that every code inside this division starts with."""
    level = level_of(code)
    if level == "province":
        return code[:2]
    if level == "prefecture":
        return code[:4]
    return code


def parent_of(code: str) -> str | None:
    """The enclosing division's code: village → township → county → prefecture → province."""
    level = level_of(code)
    if level == "village":
        return code[:9]
    if level == "township":
        return code[:6]
    if level == "county":
        return code[:4] + "00"
    if level == "prefecture":
        return code[:2] + "0000"
    return None


def contains(outer: str, inner: str) -> bool:
    """True when ``inner`` lies inside (or is) ``outer``."""
    return inner.startswith(significant(outer))


def overlaps(area_code: str, division_code: str) -> bool:
    """Contracts §3: a division overlaps an area code when it contains it or lies inside it."""
    return contains(division_code, area_code) or contains(area_code, division_code)
