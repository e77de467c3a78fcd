"""Credit oriented by value: the one place a Shapley value turns into benefit to the model.

A Shapley value is in the property's units and points the property's way: for a lower-is-better property
(``fid``: :data:`~contribshap.pipeline.config.diffusion.PROPERTY_DIRECTIONS`, or the config's top-level
``directions``) a contributor that helps has a negative value. Every table, card, plot and export ranks by
**credit** instead::

    credit = value          (higher is better)
    credit = -value         (lower is better: credit = reduction of the property)

so rank 1 is always the most valuable contributor. The flip happens here and nowhere else; the raw value
stays next to it in ``estimates.json`` / ``estimates.parquet`` (``value``, ``ci_low``, ``ci_high``), with
``direction`` (``"higher"`` | ``"lower"``). A contributor is **harmful** when its credit interval lies
wholly below 0 (identified, ``credit_high < 0``): its data makes the property worse at the stated level.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["DIRECTIONS", "credit_fields", "direction_note", "is_harmful", "oriented_people", "sign"]

#: The two directions a property can be better in.
DIRECTIONS: tuple[str, ...] = ("higher", "lower")


def sign(direction: str | None) -> float:
    """+1 for ``"higher"`` (or None: documents written before ``direction`` existed), -1 for ``"lower"``."""
    return -1.0 if direction == "lower" else 1.0


def direction_note(prop: str, direction: str | None) -> str:
    """The sentence said once per property: ``"fid: lower is better; credit = reduction of fid"``."""
    if direction == "lower":
        return f"{prop}: lower is better; credit = reduction of {prop}"
    return f"{prop}: higher is better; credit = increase of {prop}"


def _float(x: Any) -> float:
    try:
        return float(x) if x is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def credit_fields(value: Any, ci_low: Any, ci_high: Any, identified: bool, direction: str | None) -> dict[str, Any]:
    """``credit``, ``credit_low``, ``credit_high`` (None when not identified) and ``harmful`` of one contributor."""
    s = sign(direction)
    credit = s * _float(value)
    if not identified:
        return {"credit": credit, "credit_low": None, "credit_high": None, "harmful": False}
    low, high = sorted((s * _float(ci_low), s * _float(ci_high)))
    return {"credit": credit, "credit_low": low, "credit_high": high, "harmful": bool(high < 0)}


def is_harmful(person: dict[str, Any]) -> bool:
    """True when the contributor's credit interval lies wholly below 0 (it is identified)."""
    high = person.get("credit_high")
    return bool(person.get("identified", True)) and high is not None and _float(high) < 0


def oriented_people(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The contributors of one ``estimates.json`` method entry, each with its credit fields.

    Entries written before credit existed (no ``credit`` key) get them from ``value`` and the entry's
    ``direction`` (higher when absent); entries that have them are returned as they are (copies).
    """
    direction = doc.get("direction")
    out = []
    for person in doc.get("contributors", []):
        person = dict(person)
        if "credit" not in person:
            person.update(credit_fields(person.get("value"), person.get("ci_low"), person.get("ci_high"),
                                        bool(person.get("identified", True)), direction))
        out.append(person)
    return out
