"""Range checks that raise :class:`~sound_cluster.errors.ConfigError` naming the key and the value."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from sound_cluster.errors import ConfigError


def fail(key: str, value: Any, expected: str) -> None:
    raise ConfigError(f"{key} must be {expected}, got {value!r}")


def positive_int(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        fail(key, value, "a positive integer")


def int_at_least(key: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        fail(key, value, f"an integer >= {low}")


def positive_float(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        fail(key, value, "a positive number")


def non_negative(key: str, value: Any, *, integer: bool = False, what: str | None = None) -> None:
    kinds = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not value >= 0:  # nan is not >= 0
        fail(key, value, what or ("an integer >= 0" if integer else "a number >= 0"))


def one_of(key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        fail(key, value, "one of " + ", ".join(choices))


def build(base: Any, values: Mapping[str, Any] | None, prefix: str) -> Any:
    """A settings dataclass from ``values``: ``base`` (a class, or an instance whose values the missing keys take).

    Raises
    ------
    ConfigError
        A key of ``values`` is not a field of ``base``.
    """
    values = dict(values or {})
    names = {f.name for f in dataclasses.fields(base)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"unknown key {prefix}.{unknown[0]} (known: {', '.join(sorted(names))})")
    return base(**values) if isinstance(base, type) else dataclasses.replace(base, **values)

