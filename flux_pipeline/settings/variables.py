"""An environment variable as a setting: its type, bound, default and help, read when used."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Generic, TypeVar, cast

from flux_pipeline.settings.declare import describe_bound

T = TypeVar("T")


@dataclass(frozen=True)
class Variable(Generic[T]):
    """``name`` read from the environment each time :meth:`read` is called.

    ``kind`` is ``int``, ``float`` or ``str``; unset or blank gives ``default``. A value that is
    not a ``kind`` (numbers: also inf and NaN) or is past the bound raises :class:`ValueError`
    naming the variable. Annotate the declaration as ``Variable[float | None]`` when the
    default is None.
    """

    name: str
    kind: type[int] | type[float] | type[str]
    default: T
    help: str
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    #: What a number counts, as the page and the error say it ("seconds").
    unit: str = ""
    #: Never printed: neither its value in errors nor its default on the page.
    secret: bool = False

    @property
    def bound(self) -> dict[str, float]:
        """The declared bound, as :func:`~flux_pipeline.settings.declare.bounds` gives it."""
        kinds = {"gt": self.gt, "ge": self.ge, "lt": self.lt, "le": self.le}
        return {kind: value for kind, value in kinds.items() if value is not None}

    def read(self) -> T:
        """The variable's value now, checked; ``default`` when unset or blank."""
        given = os.environ.get(self.name, "")
        raw = given.strip()
        if not raw:
            return self.default
        if self.kind is str:  # as given: a key's stray newline is the engine's to drop
            return cast("T", given)
        try:
            value = self.kind(raw)
        except ValueError:
            value = math.nan
        if not self._within(float(value)):
            shown = "" if self.secret else f", got {raw!r}"
            raise ValueError(f"{self.name} must be {self.requirement()}{shown}")
        return cast("T", value)

    def _within(self, value: float) -> bool:
        bound = self.bound
        return (
            math.isfinite(value)
            and ("gt" not in bound or value > bound["gt"])
            and ("ge" not in bound or value >= bound["ge"])
            and ("lt" not in bound or value < bound["lt"])
            and ("le" not in bound or value <= bound["le"])
        )

    def requirement(self) -> str:
        """What a valid value is: "a positive number of seconds", "an integer >= 1", ..."""
        bound = self.bound
        noun = "an integer" if self.kind is int else "a number"
        if bound == {"gt": 0}:
            noun = f"a positive {noun.rsplit(maxsplit=1)[-1]}"
        elif set(bound) == {"ge", "le"}:
            noun = f"{noun} between {bound['ge']:g} and {bound['le']:g}"
        elif bound:
            noun = f"{noun} {describe_bound(bound)}"
        return f"{noun} of {self.unit}" if self.unit else noun
