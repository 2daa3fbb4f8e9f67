"""The ``prompts`` stage: a prompt table or grid becomes validated rows, and each partition's
requests.

- :mod:`.table`: reading a table (CSV, Parquet) or grid, validating every row at once;
- :mod:`.cells`: the rule of each known column; :mod:`.attributes`: the other columns (labels);
- :mod:`.templates`: prompts as Jinja2 templates over their row's attributes;
- :mod:`.grid`: YAML grids of templates and attribute lists, expanded into rows;
- :mod:`.variants`: each partition's requests, one per row and variant, with their seeds.
"""

from flux_pipeline.prompts.attributes import KNOWN_COLUMNS, RESERVED
from flux_pipeline.prompts.cells import (
    MAX_PROMPT_CHARS,
    MAX_PROMPT_ID_CHARS,
    MAX_SEED,
    MAX_VARIANTS,
)
from flux_pipeline.prompts.grid import MAX_GRID_ROWS
from flux_pipeline.prompts.problems import Problem, PromptTableError
from flux_pipeline.prompts.table import (
    COLUMNS,
    DTYPES,
    REQUIRED_COLUMNS,
    SAMPLE_GRID,
    SAMPLE_TABLE,
    attribute_names,
    load_prompt_table,
    prompt_table_parquet,
)
from flux_pipeline.prompts.variants import (
    MAX_PARTITION_IMAGES,
    RangeRequests,
    derive_seed,
    partition_requests,
    variant_seeds,
)

__all__ = [
    "COLUMNS",
    "DTYPES",
    "KNOWN_COLUMNS",
    "MAX_GRID_ROWS",
    "MAX_PARTITION_IMAGES",
    "MAX_PROMPT_CHARS",
    "MAX_PROMPT_ID_CHARS",
    "MAX_SEED",
    "MAX_VARIANTS",
    "REQUIRED_COLUMNS",
    "RESERVED",
    "SAMPLE_GRID",
    "SAMPLE_TABLE",
    "Problem",
    "PromptTableError",
    "RangeRequests",
    "attribute_names",
    "derive_seed",
    "load_prompt_table",
    "partition_requests",
    "prompt_table_parquet",
    "variant_seeds",
]
