"""Typed run configs: dataclasses with help text, loaded from YAML and overridden from the command line.

Every verb declares one dataclass (fields may be dataclasses themselves). The command line is read
against it: `--batch-size 64`, `--batch-size=64`, `--train.lr=3e-5` (dotted paths reach nested
fields), `--normalize` for a boolean. `--config run.yaml` loads a YAML file first; flags win over it.
Unknown keys are rejected with the closest valid key, values are checked against the field's type,
and the resolved config can be saved next to a run's outputs.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path

import yaml

from bertkit.errors import BertkitError, suggest
from bertkit.outputs import atomic_write_text


def option(
    default,
    help: str,
    choices: tuple | None = None,
    at_least: float | None = None,
    above: float | None = None,
    at_most: float | None = None,
    below: float | None = None,
):
    """A config field with its help text; for closed choices the allowed values, for numbers the range
    (`at_least`/`at_most` inclusive, `above`/`below` exclusive). Every verb's parser enforces both."""
    meta = {
        "help": help,
        "choices": choices,
        "range": (at_least, above, at_most, below) if (at_least, above, at_most, below) != (None,) * 4 else None,
    }
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def range_text(bounds) -> str:
    """'>= 1', '> 0 and <= 1', ... for a field's `range` metadata."""
    at_least, above, at_most, below = bounds
    parts = [
        f"{op} {v if isinstance(v, int) else format(v, 'g')}"
        for op, v in ((">=", at_least), (">", above), ("<=", at_most), ("<", below))
        if v is not None
    ]
    return " and ".join(parts)


def _check_range(value, bounds, key: str, source: str):
    """Refuse a number outside the field's range (and NaN or infinity for any ranged number)."""
    if value is None or bounds is None:
        return
    values = value if isinstance(value, list) else [value]
    at_least, above, at_most, below = bounds
    for v in values:
        bad = (
            (isinstance(v, float) and not math.isfinite(v))
            or (at_least is not None and v < at_least)
            or (above is not None and v <= above)
            or (at_most is not None and v > at_most)
            or (below is not None and v >= below)
        )
        if bad:
            raise BertkitError(f"{source}: `--{key.replace('_', '-')}` is {v!r}; it must be {range_text(bounds)}")


def required(help: str):
    return dataclasses.field(default=None, metadata={"help": help, "required": True})


def _fields(cls) -> dict[str, dataclasses.Field]:
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        f.type = hints[f.name]
        out[f.name] = f
    return out


def _base_type(tp):
    """`int | None` -> int; `list[int]` -> list."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0])
    return origin or tp


def _coerce(value, tp, key: str, source: str):
    base = _base_type(tp)
    if value is None or dataclasses.is_dataclass(base):
        return value
    try:
        if base is bool:
            if isinstance(value, bool):
                return value
            text = str(value).lower()
            if text in ("true", "1", "yes", "on"):
                return True
            if text in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if base is list:
            (item,) = typing.get_args(_strip_optional(tp)) or (str,)
            items = value if isinstance(value, list) else [v for v in str(value).split(",") if v]
            if dataclasses.is_dataclass(item):  # a list of records, e.g. the tasks of a multi-task run
                return [from_dict(item, v, source, f"{key}[{i}].") for i, v in enumerate(items)]
            return [_coerce(v, item, key, source) for v in items]
        if base is float and isinstance(value, str):
            return float(value)
        if base in (int, float, str):
            if base is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            return base(value)
    except (TypeError, ValueError):
        raise BertkitError(f"{source}: `{key}` must be {_type_name(tp)}, got {value!r}") from None
    return value


def _strip_optional(tp):
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0]
    return tp


def _type_name(tp) -> str:
    base = _base_type(tp)
    return {
        bool: "true or false",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a comma-separated list",
    }.get(base, str(tp))


def from_dict(cls, data: dict, source: str = "config", prefix: str = ""):
    """Build dataclass `cls` from a nested dict, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise BertkitError(f"{source}: `{prefix.rstrip('.') or 'config'}` must be a mapping, got {data!r}")
    fields = _fields(cls)
    kwargs = {}
    for key, value in data.items():
        norm = key.replace("-", "_")
        if norm not in fields:
            raise BertkitError(
                f"{source}: unknown key `{prefix}{key}`{suggest(norm, fields)}; valid keys here: {', '.join(fields)}"
            )
        f = fields[norm]
        base = _base_type(f.type)
        if dataclasses.is_dataclass(base):
            if not isinstance(value, dict) and "data" in _fields(base):
                value = {"data": value}  # `--train FILE` is short for `--train.data FILE`
            kwargs[norm] = from_dict(base, value or {}, source, prefix + norm + ".")
        else:
            value = _coerce(value, f.type, prefix + norm, source)
            choices = f.metadata.get("choices")
            if choices and value not in choices:
                raise BertkitError(
                    f"{source}: `{prefix}{norm}` is {value!r}{suggest(str(value), choices)}; "
                    f"choose one of: {', '.join(map(str, choices))}"
                )
            _check_range(value, f.metadata.get("range"), prefix + norm, source)
            kwargs[norm] = value
    obj = cls(**kwargs)
    for name, f in fields.items():
        if f.metadata.get("required") and getattr(obj, name) is None:
            raise BertkitError(f"{source}: `--{prefix}{name.replace('_', '-')}` is required: {f.metadata['help']}")
    return obj


def to_dict(obj) -> dict:
    return dataclasses.asdict(obj)


def save(obj, path: str | Path) -> None:
    atomic_write_text(Path(path), yaml.safe_dump(to_dict(obj), sort_keys=False, allow_unicode=True))


def _merge(base: dict, path: list[str], value) -> None:
    for part in path[:-1]:
        if part in base and not isinstance(base[part], dict):
            base[part] = {"data": base[part]}  # `--train F --train.lr=3e-5`
        base = base.setdefault(part, {})
    if isinstance(base.get(path[-1]), dict) and not isinstance(value, dict):
        base[path[-1]]["data"] = value  # `--train.lr=3e-5 --train F`
    else:
        base[path[-1]] = value


def _field_at(cls, path: list[str]):
    """The field a dotted path names, or None when some part is unknown (reported later by from_dict)."""
    f = None
    for part in path:
        fields = _fields(cls) if dataclasses.is_dataclass(cls) else {}
        f = fields.get(part)
        if f is None:
            return None
        cls = _base_type(f.type)
    return f


def parse_args(cls, argv: list[str], prog: str, positional: str | None = None):
    """Read `argv` against dataclass `cls`: `--config FILE` first, then `--a.b=value` overrides.

    `positional` names a field that bare words fill (e.g. `bertkit fetch NAME...`).
    """
    if "-h" in argv or "--help" in argv:
        print(help_text(cls, prog))
        raise SystemExit(0)
    data: dict = {}
    flags: dict = {}
    words: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not arg.startswith("--"):
            words.append(arg)
            continue
        key, has_value, value = arg[2:].partition("=")
        path = key.replace("-", "_").split(".")
        f = _field_at(cls, path)
        if not has_value:
            if f is not None and _base_type(f.type) is bool:
                value = "true"
            elif key.startswith("no-") and _field_at(cls, key[3:].replace("-", "_").split(".")) is not None:
                path, value = key[3:].replace("-", "_").split("."), "false"
            elif i < len(argv):
                value, i = argv[i], i + 1
            else:
                raise BertkitError(f"{prog}: `--{key}` needs a value")
        if path == ["config"]:
            data = _read_yaml(value)
        else:
            _merge(flags, path, value)
    if words:
        if positional is None:
            raise BertkitError(f"{prog}: unexpected argument `{words[0]}` (options start with --; see --help)")
        _merge(flags, [positional], words if _base_type(_fields(cls)[positional].type) is list else words[0])
    return from_dict(cls, _deep_merge(data, flags), source=prog)


def _deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read_yaml(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise BertkitError(f"config file {p} not found")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise BertkitError(f"{p} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise BertkitError(f"{p} must hold a mapping of keys to values, got {type(data).__name__}")
    return _underscored(data)


def _underscored(data):
    """YAML keys as the fields spell them (`warmup-steps` -> `warmup_steps`), so flags override them."""
    if not isinstance(data, dict):
        return data
    return {k.replace("-", "_") if isinstance(k, str) else k: _underscored(v) for k, v in data.items()}


def help_text(cls, prog: str) -> str:
    rows = _help_rows(cls, "")
    width = min(max(len(flag) for flag, _ in rows if flag.startswith("  ")), 40)
    lines = [f"usage: {prog} [--config FILE.yaml] [--key=value ...]", ""]
    for flag, text in rows:
        if not flag.startswith("  "):  # a group header
            lines.append(f"{flag}: {text}".rstrip(": "))
        elif len(flag) > width:
            lines += [flag, " " * (width + 1) + text]
        else:
            lines.append(f"{flag:<{width}} {text}")
    return "\n".join(lines)


def _help_rows(cls, prefix: str) -> list[tuple[str, str]]:
    """(flag, help) for every key, nested ones under their group's header; flags as typed (dashes)."""
    rows = []
    for name, f in _fields(cls).items():
        base = _base_type(f.type)
        flag = "--" + prefix + name.replace("_", "-")
        text = f.metadata.get("help", "")
        if dataclasses.is_dataclass(base):
            rows.append((f"{flag}.*", text))
            rows += _help_rows(base, prefix + name.replace("_", "-") + ".")
            continue
        default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
        if f.metadata.get("required"):
            notes = ["required"]
        elif "(default" in text:  # the help says what an unset value means
            notes = []
        else:
            notes = [f"default {default!r}"]
        if f.metadata.get("choices"):
            notes.append(f"one of {', '.join(map(str, f.metadata['choices']))}")
        if f.metadata.get("range"):
            notes.append(range_text(f.metadata["range"]))
        rows.append((f"  {flag}", text + (f" ({'; '.join(notes)})" if notes else "")))
    return rows
