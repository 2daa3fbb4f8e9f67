"""What is wrong with a prompt table or grid: every problem found, each naming where it is."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong; ``row`` is the 1-based data row (header excluded), ``template`` the id of
    a grid's template."""

    row: int | None
    prompt_id: str | None
    field: str | None
    message: str
    template: str | None = None

    def __str__(self) -> str:
        where = []
        if self.template is not None:
            where.append(f"template {self.template!r}")
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.prompt_id:
            where.append(f"prompt_id {self.prompt_id!r}")
        if self.field:
            where.append(f"field {self.field!r}")
        return f"{', '.join(where)}: {self.message}" if where else self.message


class PromptTableError(ValueError):
    """The table cannot be used; ``problems`` lists everything found, not just the first."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        lines = [
            f"prompt table {source} has {len(problems)} problem(s) "
            "(rows are numbered from 1, counting data rows only, not the header):",
            *(f"  - {p}" for p in problems),
        ]
        super().__init__("\n".join(lines))
