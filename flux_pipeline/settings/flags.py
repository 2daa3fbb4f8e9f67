"""Command-line flags derived from a :class:`~flux_pipeline.settings.Settings` model.

Each field becomes one flag named after it (``step_time`` -> ``--step-time``, or the
``flag=`` given to :func:`~flux_pipeline.settings.setting`), with the field's help text and
default; the parsed values are checked by the model itself, so a bad value fails naming the
field. Booleans are switches (``--v2-only``; a default of True needs ``flag="--no-..."``),
``Literal`` types give choices, and a tuple is a repeatable flag.
"""

from __future__ import annotations

import argparse
import types
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from flux_pipeline.settings.declare import extra

M = TypeVar("M", bound=BaseModel)


def flag_name(name: str, info: FieldInfo) -> str:
    """The flag of field ``name``: its declared ``flag``, else ``--`` and its dashed name."""
    return extra(info, "flag") or "--" + name.replace("_", "-")


def value_type(info: FieldInfo) -> Any:
    """The field's type without ``| None`` and ``Annotated`` constraints."""
    annotation = info.annotation
    if get_origin(annotation) in (Union, types.UnionType):
        present = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(present) == 1:
            annotation = present[0]
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def add_flags(parser: argparse.ArgumentParser, model: type[BaseModel]) -> None:
    """One flag on ``parser`` per field of ``model``, its destination the field's name."""
    for name, info in model.model_fields.items():
        parser.add_argument(flag_name(name, info), dest=name, **_options(info))


def from_flags(model: type[M], args: argparse.Namespace) -> M:
    """``model`` made from the parsed flags of its fields (its validation applies)."""
    values = {name: getattr(args, name) for name in model.model_fields}
    return model(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def _options(info: FieldInfo) -> dict[str, Any]:
    kind = value_type(info)
    helptext = (info.description or "").replace("%", "%%")
    options: dict[str, Any] = {"default": info.default}
    if kind is bool:
        options["action"] = "store_false" if info.default else "store_true"
        return {**options, "help": helptext}
    if get_origin(kind) is tuple:
        options.update(action="append", default=[], type=get_args(kind)[0])
    elif get_origin(kind) is Literal:
        options["choices"] = get_args(kind)
    else:
        options["type"] = kind
    metavar = extra(info, "metavar")
    if metavar:
        options["metavar"] = metavar
    if info.default is not None and get_origin(kind) is not tuple:
        helptext += " (default: %(default)s)"
    return {**options, "help": helptext}
