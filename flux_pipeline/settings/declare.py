"""How a setting is declared: a field of a :class:`Settings` model made by :func:`setting`."""

from __future__ import annotations

from typing import Any, Self

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.fields import FieldInfo

#: The bound keywords :func:`setting` takes, as pydantic spells them.
BOUND_KINDS = ("gt", "ge", "lt", "le")
_SYMBOLS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def setting(
    default: Any,
    help: str,
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    finite: bool = False,
    flag: str | None = None,
    metavar: str | None = None,
    secret: bool = False,
    shown_as: str | None = None,
) -> Any:
    """One setting: its default, help text and bound (``gt``/``ge``/``lt``/``le``).

    ``finite`` refuses inf and NaN; ``flag`` and ``metavar`` name a CLI flag other than the
    one derived from the field's name (``step_time`` -> ``--step-time``); ``secret`` keeps the
    value out of ``repr`` and of validation messages; ``shown_as`` names the type on the
    reference page when the Python type does not say it well.
    """
    limits = {"gt": gt, "ge": ge, "lt": lt, "le": le, "allow_inf_nan": False if finite else None}
    options: dict[str, Any] = {key: value for key, value in limits.items() if value is not None}
    details = (("flag", flag), ("metavar", metavar), ("shown_as", shown_as))
    cli = {key: value for key, value in details if value}
    if cli:
        options["json_schema_extra"] = cli
    return Field(default=default, description=help, repr=not secret, **options)


class Settings(BaseModel):
    """A group of settings. Unknown names are refused, and no message quotes the input."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)


class ValueObject(Settings):
    """Settings as an immutable value; a bad value raises :class:`ValueError` naming the field
    (``deadline: must be > 0, got -5``), the form the CLI prints and the tests match."""

    model_config = ConfigDict(frozen=True)

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ValueError(explain(exc, type(self))) from None

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes``, checked like a new value (``dataclasses.replace``'s role)."""
        return type(self)(**{**self.model_dump(), **changes})


def explain(error: ValidationError, model: type[BaseModel]) -> str:
    """Each error of ``error`` as ``field: what is wrong, got value`` (never a secret's value)."""
    parts = []
    for item in error.errors():
        message = item["msg"].removeprefix("Value error, ")
        location = item["loc"]
        if not location:  # a rule across fields names its field itself
            parts.append(message)
            continue
        name = str(location[0])
        where = "".join(f"[{part}]" for part in location[1:])
        info = model.model_fields.get(name)
        value = "" if info is None or not info.repr else f", got {item['input']!r}"
        parts.append(f"{name}{where}: {message[:1].lower()}{message[1:]}{value}")
    return "; ".join(parts)


def bounds(info: FieldInfo) -> dict[str, float]:
    """The bound a field was declared with: ``{"ge": 1}``, ``{"ge": 0, "le": 1}``, ..."""
    found: dict[str, float] = {}
    for limit in info.metadata:
        if isinstance(limit, Gt | Ge | Lt | Le):
            for kind in BOUND_KINDS:
                value = getattr(limit, kind, None)
                if value is not None:
                    found[kind] = float(value)
    return found


def describe_bound(bound: dict[str, float]) -> str:
    """``{"ge": 0, "le": 1}`` -> ``>= 0, <= 1``; empty when unbounded."""
    return ", ".join(f"{_SYMBOLS[kind]} {bound[kind]:g}" for kind in BOUND_KINDS if kind in bound)


def extra(info: FieldInfo, key: str) -> str | None:
    """A detail (``flag``, ``metavar``, ``shown_as``) given to :func:`setting`, or None."""
    found = info.json_schema_extra
    value = found.get(key) if isinstance(found, dict) else None
    return value if isinstance(value, str) else None
