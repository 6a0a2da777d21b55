"""Dataclass configs, domain-free: typed reading from nested dicts, YAML files with
``base:``, dotted ``KEY=VALUE`` overrides, and command-line flags from field metadata.

- :func:`from_dict` builds a (nested) dataclass from a dict, converting each value to
  its annotated type or raising :class:`TypeError` naming the dotted path; unknown keys
  raise :class:`ValueError`. A partial dict for a dataclass-typed field is read over
  that field's default (so a section keeps its domain's defaults).
- :func:`read_yaml` reads a YAML mapping (``base: other.yaml`` first, this file on top);
  :func:`parse_override` / :func:`set_dotted` apply ``a.b.c=value`` overrides.
- :func:`add_flags` adds one argparse option per field whose metadata names a
  ``flag`` (``field(default=..., metadata={"flag": "--budget", "help": "..."})``, with
  optional ``choices`` or ``aliases``); :func:`flag_overrides` turns the given ones back
  into overrides. Both command lines generate their shortcuts this way.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import numbers
import re
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "check",
    "Flag",
    "add_flags",
    "config_flags",
    "deep_merge",
    "flag_overrides",
    "from_dict",
    "get_dotted",
    "is_distribution",
    "is_int",
    "parse_override",
    "read_yaml",
    "set_dotted",
]


def _is_optional(tp: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return True, args[0]
    return False, tp


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Convert ``value`` to the annotated type ``tp`` or raise naming ``path``."""
    optional, inner = _is_optional(tp)
    if value is None:
        if optional:
            return None
        raise TypeError(f"{path}: expected {_type_name(inner)}, got None")
    if dataclasses.is_dataclass(inner):
        if isinstance(value, inner):
            return value
        if not isinstance(value, dict):
            raise TypeError(f"{path}: expected a mapping of fields, got {type(value).__name__}")
        return from_dict(inner, value, path)
    origin = typing.get_origin(inner)
    if inner is bool:
        if isinstance(value, bool):
            return value
        raise TypeError(f"{path}: expected a bool (true/false), got {value!r}")
    if inner is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise TypeError(f"{path}: expected an int, got {value!r}")
        return value
    if inner is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if inner is str:
        if not isinstance(value, str):
            raise TypeError(f"{path}: expected a string, got {value!r}")
        return value
    if origin is list:
        (item_tp,) = typing.get_args(inner)
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{path}: expected a list, got {value!r}")
        return [_coerce(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise TypeError(f"{path}: expected a mapping, got {value!r}")
        return copy.deepcopy(dict(value))
    raise TypeError(f"{path}: unsupported annotation {tp!r}")  # pragma: no cover


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def check(cond: bool, field_path: str, expected: str, got: Any) -> None:
    """Raise ``ValueError("<field_path>: expected <expected>, got <got>")`` unless ``cond``."""
    if not cond:
        raise ValueError(f"{field_path}: expected {expected}, got {got!r}")


def is_int(value: Any) -> bool:
    """Whether ``value`` is an int or a numpy integer (not a bool, nor a numpy bool)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_distribution(p: Any, n: int | None = None) -> bool:
    """Whether ``p`` is a list or tuple of (``n``, if given) positive numbers summing to 1
    (within 1e-6)."""
    return (
        isinstance(p, (list, tuple))
        and (n is None or len(p) == n)
        and all(isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0 for x in p)
        and abs(sum(p) - 1.0) <= 1e-6
    )


def from_dict(cls: type, data: dict[str, Any], path: str = "") -> Any:
    """``cls(**data)`` with every value converted to its annotated type (nested
    dataclasses included); errors name ``path.<field>``."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{path}." if path else ""
        raise ValueError(
            f"{where}{unknown[0]}: unknown config key; expected one of {sorted(names)}"
        )
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for name, value in data.items():
        default = fields[name].default_factory
        if (
            isinstance(value, dict)
            and dataclasses.is_dataclass(hints[name])
            and default is not dataclasses.MISSING
        ):
            # a partial section is read over the field's default (the domain's defaults)
            base = default()
            value = {**{f.name: getattr(base, f.name) for f in dataclasses.fields(base)}, **value}
        kwargs[name] = _coerce(value, hints[name], f"{path}.{name}" if path else name)
    return cls(**kwargs)


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with ``update`` merged in, nested dicts key by key."""
    out = copy.deepcopy(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The YAML mapping at ``path`` over its ``base:`` file (relative to it), if any."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path}: expected a UTF-8 YAML file ({err.reason} at byte {err.start})"
        ) from None
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: invalid YAML: {' '.join(str(err).split())}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a YAML mapping at the top level")
    data = _numbers(data)
    base = data.pop("base", None)
    if base is not None:
        # ``base: other.yaml`` (relative to this file) is read first, this file on top.
        data = deep_merge(read_yaml(path.parent / base), data)
    return data


_FLOAT_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _numbers(obj: Any) -> Any:
    """Turn float-looking strings (YAML 1.1 reads ``3e-4`` as a string) into floats."""
    if isinstance(obj, dict):
        return {k: _numbers(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_numbers(v) for v in obj]
    if isinstance(obj, str) and _FLOAT_RE.fullmatch(obj.strip()):
        return float(obj)
    return obj


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``"a.b.c=value"`` into ``("a.b.c", value)``; the value is read as YAML."""
    if "=" not in text:
        raise ValueError(f"override {text!r}: expected KEY=VALUE, e.g. train.n_envs=4")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ValueError(f"override {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ValueError(f"override {key}: cannot parse value {raw!r}: {e}") from e
    return key, _numbers(value)


def set_dotted(d: dict[str, Any], key: str, value: Any) -> None:
    """``d[a][b][c] = value`` for ``key`` ``"a.b.c"`` (missing sections are created)."""
    parts = key.split(".")
    cur = d
    for i, p in enumerate(parts[:-1]):
        nxt = cur.get(p)
        if nxt is None:
            nxt = cur[p] = {}
        if not isinstance(nxt, dict):
            raise ValueError(f"{'.'.join(parts[: i + 1])}: is not a section; cannot set {key}")
        cur = nxt
    cur[parts[-1]] = value


def get_dotted(d: dict[str, Any], key: str) -> Any:
    """``d[a][b][c]`` for ``key`` ``"a.b.c"``; KeyError if absent."""
    cur: Any = d
    for p in key.split("."):
        if not isinstance(cur, dict) or p not in cur:
            raise KeyError(key)
        cur = cur[p]
    return cur


# ------------------------------------------------------------------------------- flags


@dataclass(frozen=True)
class Flag:
    """A command-line shortcut for one config field.

    Attributes:
        option: The option string, e.g. ``"--lambda-lr"``.
        dest: Its argparse destination, e.g. ``"lambda_lr"``.
        key: The dotted config key it sets, e.g. ``"constraint.lambda_lr"``.
        field: The dataclass field (its ``metadata`` holds ``help`` and ``choices``).
        type: The field's type, ``Optional`` removed (``int``, ``float``, ``str``, ``bool``).
    """

    option: str
    dest: str
    key: str
    field: dataclasses.Field
    type: Any

    @property
    def aliases(self) -> Mapping[str, str] | None:
        """Accepted names -> field values (e.g. ``cv`` -> ``constant_velocity``), if any."""
        return self.field.metadata.get("aliases")


def config_flags(cls: type, prefix: str = "", exclude: tuple[str, ...] = ()) -> list[Flag]:
    """The :class:`Flag` of every field of ``cls`` (nested dataclasses included, their
    keys prefixed ``field.``) whose metadata names a ``flag``, in field order, less the
    dotted keys in ``exclude``."""
    return list(_walk(cls, prefix, exclude))


def _walk(cls: type, prefix: str, exclude: tuple[str, ...]) -> Iterator[Flag]:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        tp = _is_optional(hints[f.name])[1]
        if dataclasses.is_dataclass(tp):
            yield from _walk(tp, key, exclude)
        elif "flag" in f.metadata and key not in exclude:
            option = f.metadata["flag"]
            yield Flag(option, option.lstrip("-").replace("-", "_"), key, f, tp)


def add_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    prefix: str = "",
    *,
    defaults: Any | None = None,
    exclude: tuple[str, ...] = (),
) -> list[Flag]:
    """Add an option for each of :func:`config_flags` ``(cls, prefix, exclude)``.

    Args:
        parser: Parser or argument group to add to.
        cls: The config dataclass.
        prefix: Dotted key of ``cls`` in the whole config (``"constraint"``).
        defaults: An instance of ``cls`` whose values become the options' defaults;
            ``None``: every default is ``None`` (an absent flag overrides nothing, see
            :func:`flag_overrides`) and the help names the dotted key.
        exclude: Dotted keys not to offer.

    Returns:
        The flags added.
    """
    flags = config_flags(cls, prefix, exclude)
    for fl in flags:
        help_text = fl.field.metadata.get("help", "")
        kwargs: dict[str, Any] = {"dest": fl.dest}
        if defaults is None:
            kwargs["default"] = None
            kwargs["help"] = f"{help_text} ({fl.key})"
        else:
            obj = defaults
            for part in (fl.key.removeprefix(f"{prefix}.") if prefix else fl.key).split("."):
                obj = getattr(obj, part)
            kwargs["default"] = obj
            kwargs["help"] = f"{help_text} (default: %(default)s)"
        if fl.type is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = fl.type
        if fl.aliases:
            kwargs["choices"] = sorted(fl.aliases)
        elif "choices" in fl.field.metadata:
            kwargs["choices"] = fl.field.metadata["choices"]
        parser.add_argument(fl.option, **kwargs)
    return flags


def flag_overrides(args: argparse.Namespace, flags: list[Flag]) -> list[str]:
    """``KEY=VALUE`` overrides (see :func:`parse_override`) for the flags given in
    ``args`` (not ``None``), aliases resolved, booleans as ``true`` / ``false``."""
    out = []
    for fl in flags:
        value = getattr(args, fl.dest, None)
        if value is None:
            continue
        if fl.aliases:
            value = fl.aliases[value]
        if isinstance(value, bool):
            value = "true" if value else "false"
        out.append(f"{fl.key}={value}")
    return out
