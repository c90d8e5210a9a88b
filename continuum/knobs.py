"""A knob: one dataclass field that carries everything said about a setting, so that each fact
is written once. The field's name is the keyword (``LLM(max_num_seqs=...)``) and, with ``_``
as ``-``, the CLI flag; its type annotation and default are the flag's type and default; its
``help`` is the flag's help text. ``continuum/cli.py`` turns knobs into flags
(``add_knob_args``); ``EngineArgs`` and each scheduling policy's config are made of knobs.

Metadata keys (all optional but ``help``):
- ``help``: one line for ``--help`` (the CLI appends ``(default: X)``); for a bool knob that
  is on by default, it describes the negative flag;
- ``flag``: a flag spelled other than ``--<name>``. A bool knob whose default is True is set
  off by a negative flag, which must be given (``flag="--no-prefix-caching"``);
- ``choices``: the allowed values (a callable is called when the parser is built);
- ``metavar``: the flag's value placeholder;
- ``cli``: False for a knob that is not a flag (a dict, or a test-only override).
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, Callable, Iterable, Mapping, TypeVar

T = TypeVar("T")


def knob(default: Any = dataclasses.MISSING, help: str = "", *, flag: str | None = None,
         choices: Iterable[str] | Callable[[], Iterable[str]] | None = None,
         metavar: str | None = None, cli: bool = True,
         default_factory: Callable[[], Any] | Any = dataclasses.MISSING) -> Any:
    """A dataclass field with its help text and CLI spelling (module docstring)."""
    if not help.strip():
        raise ValueError("every knob needs help text (it is the flag's --help line)")
    meta = {"help": help, "flag": flag, "choices": choices, "metavar": metavar, "cli": cli}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=meta)


def cli_knobs(cls: type) -> list[dataclasses.Field]:
    """The knobs of dataclass ``cls`` that are CLI flags, in declaration order. Every field must
    be a knob: a plain field would be a setting without help text or flag."""
    plain = [f.name for f in dataclasses.fields(cls) if "help" not in f.metadata]
    if plain:
        raise TypeError(f"{cls.__name__} fields {plain} are not knobs: declare them with knob()")
    return [f for f in dataclasses.fields(cls) if f.metadata["cli"]]


def pick(cls: type[T], values: Mapping[str, Any]) -> T:
    """An instance of dataclass ``cls`` from the entries of ``values`` named like its fields
    (the others are ignored; missing fields keep their defaults)."""
    return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls) if f.name in values})


# -- knobs as CLI flags --------------------------------------------------------------------
def _flag(f: dataclasses.Field) -> str:
    return f.metadata["flag"] or "--" + f.name.replace("_", "-")


def _negated(f: dataclasses.Field, hint: Any) -> bool:
    """A bool knob that is on by default: its flag turns it off."""
    if hint is bool and f.default is True:
        if not f.metadata["flag"]:
            raise TypeError(f"bool knob {f.name} defaults to True: give its negative flag (flag=...)")
        return True
    return False


def _dest(f: dataclasses.Field, hint: Any) -> str:
    # a negative flag keeps its own dest (``--no-prefix-caching`` -> ``no_prefix_caching``)
    return _flag(f).lstrip("-").replace("-", "_") if _negated(f, hint) else f.name


def _value_type(name: str, hint: Any) -> type:
    """The flag's value type from the annotation: str if the knob takes a string at all
    (``int | str | None``: '2GiB'), else its one int or float."""
    kinds = [t for t in (typing.get_args(hint) or (hint,)) if t is not type(None)]
    if str in kinds:
        return str
    if len(kinds) == 1 and kinds[0] in (int, float):
        return kinds[0]
    raise TypeError(f"knob {name}: no flag type for {hint!r}; mark it cli=False")


def add_knob_args(group: argparse._ActionsContainer, cls: type) -> None:
    """One flag per CLI knob of dataclass ``cls``: ``--<name>`` (or its ``flag``), typed and
    defaulted by the field, with its help (``%`` is literal)."""
    hints = typing.get_type_hints(cls)
    for f in cli_knobs(cls):
        hint = hints[f.name]
        kw: dict[str, Any] = {"help": f.metadata["help"].replace("%", "%%")}
        if hint is bool:
            group.add_argument(_flag(f), dest=_dest(f, hint), action="store_true", **kw)
            continue
        choices = f.metadata["choices"]
        if callable(choices):
            choices = choices()
        group.add_argument(_flag(f), dest=f.name, type=_value_type(f.name, hint), default=f.default,
                           choices=list(choices) if choices is not None else None,
                           metavar=f.metadata["metavar"], **kw)


def knob_values(a: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The parsed values of ``cls``'s CLI knobs (``add_knob_args``) by field name."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in cli_knobs(cls):
        v = getattr(a, _dest(f, hints[f.name]))
        out[f.name] = not v if _negated(f, hints[f.name]) else v
    return out
