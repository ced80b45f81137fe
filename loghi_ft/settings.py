"""A subcommand's settings as one dataclass: defaults and help in one place; the options, recipes and overrides from it.

A field declared with `setting(default, "help")` becomes the option `--name-with-dashes` (or a positional
argument), a key of a YAML recipe (`--config FILE`), a trailing `KEY=VALUE` override, and a commented line of
the recipe a run writes. The later wins: defaults, the recipe, typed options, the overrides.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import types
import typing
from pathlib import Path

import yaml

from loghi_ft.errors import UserError

OVERRIDE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.S)


def setting(default=None, help: str = "", *, choices: tuple | None = None, group: str | None = None,
            positional: bool = False, required: bool = False, metavar: str | None = None, repeat: bool = False):
    """A dataclass field that is also a command-line option; a list default is copied for each instance.
    A list takes its values after one flag (`--train-list a b`), or one per flag with `repeat` (`--pred a --pred b`)."""
    meta = {"help": help, "choices": choices, "group": group, "positional": positional, "required": required,
            "metavar": metavar, "repeat": repeat}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def split_overrides(argv: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Separate trailing KEY=VALUE words from the rest of the command line."""
    rest, overrides = [], []
    for word in argv:
        m = OVERRIDE.match(word)
        if m and not word.startswith("-"):
            overrides.append((m.group(1), m.group(2)))
        else:
            rest.append(word)
    return rest, overrides


def kind(cls, name: str) -> tuple[type, bool]:
    """The element type of a field (int, float, str, bool, Path) and whether the field holds a list of them."""
    hint = typing.get_type_hints(cls)[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint, args = args[0], list(typing.get_args(args[0]))
    if typing.get_origin(hint) is list:
        return args[0], True
    return hint, False


def add_arguments(parser: argparse.ArgumentParser, cls) -> None:
    """One option per field of `cls`; nothing typed leaves the namespace without it (defaults come later)."""
    groups: dict = {}
    for f in dataclasses.fields(cls):
        meta = f.metadata
        target = parser
        if meta.get("group"):
            target = groups.setdefault(meta["group"], parser.add_argument_group(meta["group"]))
        elem, many = kind(cls, f.name)
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        shown = "" if default in (None, False, [], "") else f" (default: {display(default)})"
        options: dict = {"help": (meta.get("help", "") + shown).replace("%", "%%"), "default": argparse.SUPPRESS}
        if elem is bool:
            options["action"] = "store_true"
        else:
            options.update(type=elem if elem is not str else None, choices=meta.get("choices"),
                           metavar=meta.get("metavar"))
            if many:
                options.update(action="append") if meta.get("repeat") else options.update(nargs="+")
        if meta.get("positional"):
            options["nargs"] = ("+" if meta.get("required") else "*") if many else None
            target.add_argument(f.name, **{k: v for k, v in options.items() if v is not None})
        else:
            target.add_argument("--" + f.name.replace("_", "-"), **{k: v for k, v in options.items() if v is not None})
    parser.add_argument("--config", type=Path, default=argparse.SUPPRESS,
                        help="YAML recipe: its keys are these settings (batch_size: 8); trailing KEY=VALUE overrides one")


def display(value) -> str:
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)


def resolve(cls, typed: argparse.Namespace, overrides: list[tuple[str, str]]):
    """The settings: defaults, then the --config recipe, then the typed options, then the KEY=VALUE overrides."""
    values: dict = {}
    names = {f.name for f in dataclasses.fields(cls)}
    config = getattr(typed, "config", None)
    typed = {k: v for k, v in vars(typed).items() if k in names}
    if config is not None:
        for key, value in load_recipe(config).items():
            key = known(cls, key, str(config))
            values[key] = coerce(cls, key, value, str(config))
    values.update(typed)
    for key, raw in overrides:
        key = known(cls, key.replace("-", "_"), f"override {key}={raw}")
        values[key] = coerce(cls, key, yaml.safe_load(raw) if raw != "" else None, "override")
    settings = cls(**values)
    for f in dataclasses.fields(cls):
        if f.metadata.get("required") and getattr(settings, f.name) in (None, []):
            name = f.name if f.metadata.get("positional") else "--" + f.name.replace("_", "-")
            raise UserError(f"{name} is required: {f.metadata.get('help', '')}")
    return settings


def known(cls, key: str, source: str) -> str:
    names = [f.name for f in dataclasses.fields(cls)]
    if key not in names:
        raise UserError(f"{source}: unknown setting '{key}'; known: {', '.join(sorted(names))}")
    return key


def coerce(cls, key: str, value, source: str):
    """A recipe's or an override's value as the field's type; UserError naming the source when it is not one."""
    if value is None:
        return None
    elem, many = kind(cls, key)
    field = next(f for f in dataclasses.fields(cls) if f.name == key)
    items = value if isinstance(value, list) else [value]
    if isinstance(value, list) and not many:
        raise UserError(f"{source}: {key} takes one value, not a list ({value!r})")
    try:
        out = [convert(elem, v) for v in items]
    except (TypeError, ValueError) as exc:
        raise UserError(f"{source}: bad value for {key}: {value!r} ({exc})") from None
    choices = field.metadata.get("choices")
    if choices and any(v not in choices for v in out):
        raise UserError(f"{source}: {key} must be one of {', '.join(map(str, choices))}, not {value!r}")
    return out if many else out[0]


def convert(elem: type, value):
    if elem is bool:
        if isinstance(value, str):
            return value.lower() in ("1", "true", "yes", "on")
        return bool(value)
    if elem is int and isinstance(value, float) and not value.is_integer():
        raise ValueError("not a whole number")
    return elem(str(value) if elem in (Path, str) else value)


def load_recipe(path: Path) -> dict:
    """A YAML recipe as {setting: value}; dashes in its keys read as underscores."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: config file not found") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: a recipe must be a mapping of setting names to values")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def plain(value):
    """A value as YAML and JSON write it: paths as strings."""
    if isinstance(value, list):
        return [plain(v) for v in value]
    return str(value) if isinstance(value, Path) else value


def as_dict(settings) -> dict:
    return {f.name: plain(getattr(settings, f.name)) for f in dataclasses.fields(settings)}


def recipe_text(settings, leave_out: tuple[str, ...] = ()) -> str:
    """The settings as a YAML recipe that `--config` reads back, one commented line per setting, by group."""
    lines, group = [], None
    for f in dataclasses.fields(settings):
        if f.name in leave_out:
            continue
        if f.metadata.get("group") != group:
            group = f.metadata.get("group")
            lines.append(f"\n# --- {group}")
        value = yaml.safe_dump({f.name: plain(getattr(settings, f.name))}, allow_unicode=True,
                               default_flow_style=True, width=10_000).strip()[1:-1]
        lines.append(f"{value:<40} # {f.metadata.get('help', '')}")
    return "\n".join(lines).lstrip("\n") + "\n"


def command_words(settings) -> list[str]:
    """The settings as command-line words that parse back to the same settings."""
    words: list[str] = []
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if value is None or value is False or value == []:
            continue
        flag = [] if f.metadata.get("positional") else ["--" + f.name.replace("_", "-")]
        if value is True:
            words += flag
        elif f.metadata.get("repeat"):
            words += [w for v in value for w in (*flag, str(v))]
        else:
            words += flag + [str(v) for v in (value if isinstance(value, list) else [value])]
    return words
