"""Parameter checks with messages that name the parameter and the allowed values.

Papermill passes parameters through YAML / the command line, so a number can arrive as a string or a float; these
checks run before any training starts."""

from __future__ import annotations

from typing import Any, Iterable


class ParameterError(ValueError):
    """A parameter has a wrong type or value; the message names it and what is allowed."""


def check_int(name: str, value: Any, *, minimum: int | None = None, where: str = "") -> int:
    prefix = f"{where}: " if where else ""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParameterError(f"{prefix}parameter {name}={value!r} has type {type(value).__name__}; allowed: an integer")
    if minimum is not None and value < minimum:
        raise ParameterError(f"{prefix}parameter {name}={value} is too small; allowed: >= {minimum}")
    return value


def check_bool(name: str, value: Any, *, where: str = "") -> bool:
    """true / false only: a string such as "false" is refused (it would be truthy)."""
    if not isinstance(value, bool):
        prefix = f"{where}: " if where else ""
        raise ParameterError(f"{prefix}parameter {name}={value!r} has type {type(value).__name__}; allowed: true or false")
    return value


def check_float(name: str, value: Any, *, minimum: float | None = None, exclusive: bool = False, where: str = "") -> float:
    prefix = f"{where}: " if where else ""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParameterError(f"{prefix}parameter {name}={value!r} has type {type(value).__name__}; allowed: a number")
    if minimum is not None and (value <= minimum if exclusive else value < minimum):
        raise ParameterError(f"{prefix}parameter {name}={value} is out of range; allowed: {'>' if exclusive else '>='} {minimum}")
    return float(value)


def check_choice(name: str, value: Any, allowed: Iterable[Any], *, where: str = "") -> Any:
    allowed = list(allowed)
    if value not in allowed:
        prefix = f"{where}: " if where else ""
        raise ParameterError(f"{prefix}parameter {name}={value!r} is not allowed; allowed: {allowed}")
    return value


def check_keys(name: str, value: Any, allowed: Iterable[str], *, where: str = "") -> dict:
    prefix = f"{where}: " if where else ""
    if not isinstance(value, dict):
        raise ParameterError(f"{prefix}parameter {name}={value!r} has type {type(value).__name__}; allowed: a mapping")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise ParameterError(f"{prefix}parameter {name} has unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    return value


def parse_overrides(pairs: Iterable[str] | None, form: str = "key=value") -> dict:
    """``--set`` command-line overrides -> {key: YAML-parsed value}; a pair without '=' is an error naming it."""
    import yaml

    out = {}
    for p in pairs or []:
        if "=" not in p:
            raise SystemExit(f"--set expects {form}, got {p!r}")
        k, v = p.split("=", 1)
        out[k] = yaml.safe_load(v)
    return out
