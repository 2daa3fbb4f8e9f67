"""The configuration reference as Markdown tables, written from the declarations alone."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from flux_pipeline.settings.declare import bounds, describe_bound, extra
from flux_pipeline.settings.flags import flag_name, value_type
from flux_pipeline.settings.variables import Variable


def type_name(info: FieldInfo) -> str:
    """``int``, ``float or unset``, ``"jpeg" | "png"``, ``list of str``, ..."""
    kind = value_type(info)
    if extra(info, "shown_as"):
        text = str(extra(info, "shown_as"))
    elif get_origin(kind) is Literal:
        text = " \\| ".join(f"`{value}`" for value in get_args(kind))
    elif get_origin(kind) is tuple:
        text = f"list of {get_args(kind)[0].__name__}"
    else:
        text = getattr(kind, "__name__", str(kind))
    optional = info.default is None
    return f"{text}, or unset" if optional else text


def default_text(value: Any, *, secret: bool = False) -> str:
    """How a default reads on the page."""
    if value is None or value == ():
        return "unset"
    if secret:
        return "(secret)"
    return f"`{value!r}`" if isinstance(value, str) else f"`{value}`"


def _row(cells: Iterable[str]) -> str:
    return "| " + " | ".join(cell.replace("\n", " ") for cell in cells) + " |"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [_row(header), _row("---" for _ in header), *(_row(r) for r in rows)]


def fields_table(
    model: type[BaseModel], *, flags: bool = False, only: Iterable[str] | None = None
) -> list[str]:
    """One row per field of ``model`` (those named in ``only``): name (and flag), type,
    default, bound, help."""
    header = ["flag", "field"] if flags else ["field"]
    rows = []
    for name, info in model.model_fields.items():
        if only is not None and name not in only:
            continue
        names = [f"`{flag_name(name, info)}`", f"`{name}`"] if flags else [f"`{name}`"]
        rows.append(
            [
                *names,
                type_name(info),
                default_text(info.default, secret=not info.repr),
                describe_bound(bounds(info)),
                info.description or "",
            ]
        )
    return _table([*header, "type", "default", "bound", "help"], rows)


def variables_table(variables: Iterable[Variable[Any]]) -> list[str]:
    """One row per environment variable: name, type, default, bound, help."""
    rows = []
    for variable in variables:
        kind = variable.kind.__name__ + (f" ({variable.unit})" if variable.unit else "")
        rows.append(
            [
                f"`{variable.name}`",
                kind,
                default_text(variable.default, secret=variable.secret),
                describe_bound(variable.bound),
                variable.help,
            ]
        )
    return _table(["variable", "type", "default", "bound", "help"], rows)
