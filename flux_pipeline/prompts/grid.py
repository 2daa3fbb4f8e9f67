"""Prompt grids: a YAML file whose templates expand into prompt table rows.

```yaml
templates:
  - id: pets
    prompt: "a {{ style }} photo of a {{ animal }}"
    attributes: {style: [watercolor, studio], animal: [cat, dog, fox]}
    sample: 4          # optional: 4 seeded combinations instead of all 6
    variants: 2        # optional constants: variants, steps, aspect_ratio, seed
```

The file is read with PyYAML's ``BaseLoader``: every scalar stays text (``no`` stays "no",
``1.10`` stays "1.10"); ``variants``, ``steps`` and ``seed`` are then read as integers. The
whole file is checked before anything is expanded, each problem naming its template and field.

Expansion is deterministic: templates in file order, each one's combinations in the order of
``itertools.product`` over its attributes as written (the last varies fastest). ``sample: N``
keeps N of them, drawn from a generator seeded by the template id alone (sha256, not Python's
``random``), listed in the same order; adding a value to an attribute changes the sample.
A row's id is the template id and its values, made safe for file names
(``pets-watercolor-cat``); where that is not a safe id, too long, or not unique regardless of
letter case, it is the template id and the first 10 hex digits of the sha256 of the values.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

import pandas as pd
import yaml

from flux_pipeline.prompts.attributes import KNOWN_COLUMNS, attribute_name_problem
from flux_pipeline.prompts.cells import (
    MAX_PROMPT_ID_CHARS,
    aspect_ratio_cell,
    prompt_id_problem,
    seed_cell,
    steps_cell,
    variants_cell,
)
from flux_pipeline.prompts.problems import Problem, PromptTableError
from flux_pipeline.prompts.templates import TemplateProblem, placeholders

#: Combinations a template may expand into without ``sample``.
MAX_GRID_ROWS: Final = 1_000_000
#: The prompt table columns a template may set as constants, and how each is checked.
CONSTANTS: Final[dict[str, Callable[[Any], tuple[Any, str | None]]]] = {
    "variants": variants_cell,
    "steps": steps_cell,
    "aspect_ratio": aspect_ratio_cell,
    "seed": seed_cell,
}
TEMPLATE_KEYS: Final = ("id", "prompt", "attributes", "sample", *CONSTANTS)
#: Room kept in a template id for ``-`` and 10 hex digits.
_MAX_TEMPLATE_ID: Final = MAX_PROMPT_ID_CHARS - 11
_UNSAFE: Final = re.compile(r"[^\w.\-]+|\.{2,}")


@dataclass(frozen=True)
class GridTemplate:
    """One checked template: its attributes in file order, its sample size, its constants."""

    id: str
    prompt: str
    attributes: tuple[tuple[str, tuple[str, ...]], ...]
    sample: int | None
    constants: tuple[tuple[str, str], ...]

    @property
    def combinations(self) -> int:
        return math.prod(len(values) for _, values in self.attributes)


def is_grid(uri: str) -> bool:
    """Whether ``uri`` names a grid file (by its extension)."""
    return uri.lower().endswith((".yaml", ".yml"))


def read_grid(text: str, source: str) -> pd.DataFrame:
    """The grid in ``text`` expanded into a raw prompt table (text cells; empty = absent);
    raises :class:`PromptTableError` listing every problem of the file."""
    return expand(parse_grid(text, source))


def parse_grid(text: str, source: str) -> list[GridTemplate]:
    """The file's templates, checked; raises :class:`PromptTableError` listing every problem."""
    try:
        data = yaml.load(text, Loader=yaml.BaseLoader)
    except yaml.YAMLError as exc:
        problem = Problem(None, None, None, f"not valid YAML: {exc}")
        raise PromptTableError(source, [problem]) from None
    if not isinstance(data, dict) or set(data) != {"templates"}:
        keys = ", ".join(map(str, data)) if isinstance(data, dict) else type(data).__name__
        message = f"a grid file is a mapping with the one key 'templates' (found: {keys})"
        raise PromptTableError(source, [Problem(None, None, None, message)])
    entries = data["templates"]
    if not isinstance(entries, list) or not entries:
        message = "must be a non-empty list of templates"
        raise PromptTableError(source, [Problem(None, None, "templates", message)])
    problems: list[Problem] = []
    templates = []
    first_of: dict[str, str] = {}
    for index, entry in enumerate(entries, start=1):
        template, found = _template(index, entry)
        problems += found
        if template is None:
            continue
        folded = template.id.casefold()
        if folded in first_of:
            message = f"the same id as template {first_of[folded]!r} (ids differ by more than case)"
            problems.append(Problem(None, None, "id", message, template.id))
            continue
        first_of[folded] = template.id
        templates.append(template)
    if problems:
        raise PromptTableError(source, problems)
    return templates


def expand(templates: list[GridTemplate]) -> pd.DataFrame:
    """Every template's rows, in order, as a raw prompt table."""
    rows: list[dict[str, str]] = []
    names: dict[str, None] = {}
    for template in templates:
        names.update((name, None) for name, _ in template.attributes)
        for values in _combinations(template):
            row = {"prompt_id": "", "prompt": template.prompt, **dict(template.constants)}
            row.update(zip((name for name, _ in template.attributes), values, strict=True))
            row["prompt_id"] = _readable_id(template.id, values)
            row["_hashed"] = _hashed_id(template.id, values)
            rows.append(row)
    readable = Counter(row["prompt_id"].casefold() for row in rows)
    for row in rows:
        hashed = row.pop("_hashed")
        if prompt_id_problem(row["prompt_id"]) or readable[row["prompt_id"].casefold()] > 1:
            row["prompt_id"] = hashed
    columns = [*KNOWN_COLUMNS, *names]
    cells = ([row.get(column, "") for column in columns] for row in rows)
    return pd.DataFrame.from_records(cells, columns=columns)


def _template(index: int, entry: Any) -> tuple[GridTemplate | None, list[Problem]]:
    name = f"#{index}"
    if not isinstance(entry, dict):
        return None, [Problem(None, None, None, "must be a mapping (id, prompt, ...)", name)]
    problems: list[Problem] = []
    raw_id = entry.get("id")
    if isinstance(raw_id, str) and raw_id.strip():
        name = raw_id.strip()

    def bad(field: str | None, message: str) -> None:
        problems.append(Problem(None, None, field, message, name))

    for key in entry:
        if key not in TEMPLATE_KEYS:
            bad(str(key), f"unknown key; a template has {', '.join(TEMPLATE_KEYS)}")
    template_id = raw_id.strip() if isinstance(raw_id, str) else ""
    id_problem = prompt_id_problem(template_id)
    if id_problem is None and len(template_id) > _MAX_TEMPLATE_ID:
        id_problem = f"is {len(template_id)} characters long; the limit is {_MAX_TEMPLATE_ID}"
    if id_problem:
        bad("id", id_problem)

    attributes = _attributes(entry.get("attributes"), bad)
    prompt = entry.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        bad("prompt", "must be a non-empty text (a Jinja2 template over the attributes)")
    else:
        try:
            raw = entry.get("attributes")
            declared = {str(name).strip() for name in raw} if isinstance(raw, dict) else set()
            unknown = sorted(placeholders(prompt) - declared)
        except TemplateProblem as exc:
            bad("prompt", str(exc))
        else:
            for missing in unknown:
                bad("prompt", f"uses {{{{ {missing} }}}}, which is not among its attributes")

    constants = []
    for key, check in CONSTANTS.items():
        if key in entry:
            value = entry[key]
            if not isinstance(value, str):
                bad(key, f"must be a single value, got {type(value).__name__}")
                continue
            problem = check(value)[1]
            if problem:
                bad(key, problem)
            constants.append((key, value))

    combinations = math.prod(len(v) for _, v in attributes) if attributes else 0
    sample = None
    if "sample" in entry:
        sample = _sample(entry["sample"], combinations, bad)
    elif combinations > MAX_GRID_ROWS:
        bad(
            "attributes",
            f"{combinations:,} combinations exceed {MAX_GRID_ROWS:,}: add 'sample: N'",
        )
    if problems:
        return None, problems
    template = GridTemplate(template_id, str(prompt), attributes, sample, tuple(constants))
    return template, []


def _attributes(
    raw: Any, bad: Callable[[str | None, str], None]
) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if not isinstance(raw, dict) or not raw:
        bad("attributes", "must be a mapping of attribute names to lists of values")
        return ()
    attributes = []
    for raw_name, values in raw.items():
        name = str(raw_name).strip()
        field = f"attributes.{name}"
        problem = attribute_name_problem(name)
        if name in KNOWN_COLUMNS:
            problem = f"{name!r} is a prompt table column: set it as a key of the template"
        if problem:
            bad(field, problem)
            continue
        if not isinstance(values, list) or not values:
            bad(field, "must be a non-empty list of values")
            continue
        kept: list[str] = []
        for value in values:
            if not isinstance(value, str) or not value.strip():
                bad(field, f"value {value!r}: every value must be a non-empty text")
            elif value.strip() in kept:
                bad(field, f"value {value.strip()!r} is listed twice")
            else:
                kept.append(value.strip())
        attributes.append((name, tuple(kept)))
    return tuple(attributes)


def _sample(raw: Any, combinations: int, bad: Callable[[str | None, str], None]) -> int | None:
    text = raw.strip() if isinstance(raw, str) else ""
    if not text.isdigit() or not 1 <= int(text) <= max(combinations, 1):
        bad("sample", f"must be an integer 1..{combinations:,} (the combinations), got {raw!r}")
        return None
    return int(text)


def _combinations(template: GridTemplate) -> Iterator[tuple[str, ...]]:
    lists = [values for _, values in template.attributes]
    total = template.combinations
    chosen = (
        range(total) if template.sample is None else _drawn(template.id, template.sample, total)
    )
    for index in chosen:
        values, rest = [], index
        for options in reversed(lists):
            rest, digit = divmod(rest, len(options))
            values.append(options[digit])
        yield tuple(reversed(values))


def _drawn(seed: str, count: int, total: int) -> list[int]:
    """``count`` distinct indexes of ``range(total)``, sorted: Floyd's algorithm over a
    generator seeded by ``seed`` (the same on every machine and Python version)."""
    chosen: set[int] = set()
    for step, upper in enumerate(range(total - count, total)):
        digest = hashlib.sha256(f"{seed}\x00{step}".encode()).digest()
        pick = int.from_bytes(digest, "big") % (upper + 1)
        chosen.add(upper if pick in chosen else pick)
    return sorted(chosen)


def _readable_id(template_id: str, values: tuple[str, ...]) -> str:
    parts = [_UNSAFE.sub("_", value).strip("_") for value in values]
    return "-".join([template_id, *parts]) if all(parts) else ""


def _hashed_id(template_id: str, values: tuple[str, ...]) -> str:
    canonical = json.dumps(list(values), ensure_ascii=False, separators=(",", ":"))
    return f"{template_id}-{hashlib.sha256(canonical.encode()).hexdigest()[:10]}"
