"""``flux-pipeline plan`` as a real subprocess: text, JSON, the stored prompt table, errors."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from flux_pipeline.builder import BuildReport
from flux_pipeline.commands.plan import daily_keys
from flux_pipeline.emulator.settings import DEFAULT_PRICE
from flux_pipeline.prompts import partition_requests
from flux_pipeline.store.layout import PROMPT_TABLE_PATH
from flux_pipeline.store.ledger import Ledger
from flux_pipeline.store.storage import ObjectStore
from tests.support.cost_support import DAYS, plan, plan_json

# The emulator named as the service (SEGMIND_BASE_URL, SEGMIND_API_KEY), as for every cost test.
pytestmark = pytest.mark.usefixtures("service_env")


def test_json_before_and_after_a_build(
    store: ObjectStore, table_csv: Path, build: Callable[..., BuildReport]
) -> None:
    args = ("--partition", DAYS[0], "--prompts", str(table_csv), "--root", store.root)
    before = plan_json(*args, "--price-per-image", "0.5")
    (day,) = before["partitions"]
    assert (day["images"], day["to_submit"], day["reusable"]) == (4, 4, 0)
    assert day["estimated_cost"] == 2.0
    assert before["cost_basis"] == "price_per_image"
    build(DAYS[0])
    after = plan_json(*args, FLUX_STORAGE_ROOT="/nonexistent")  # --root wins
    (day,) = after["partitions"]
    assert (day["to_submit"], day["reusable"], day["failed"]) == (0, 3, 1)
    assert after["cost_basis"] == "reported"
    assert after["unit_cost"] == DEFAULT_PRICE
    assert after["total"]["estimated_cost"] == 0.0


def test_text_range_with_totals_and_footnote(store: ObjectStore, table_csv: Path) -> None:
    run = plan(
        "--partition-range",
        f"{DAYS[0]}...{DAYS[1]}",
        "--prompts",
        str(table_csv),
        FLUX_STORAGE_ROOT=store.root,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert [line.split()[:8] for line in lines if line.startswith(DAYS)] == [
        [DAYS[0], "4", "0", "0", "0", "4", "0", "unknown"],
        [DAYS[1], "4", "0", "0", "0", "3", "1", "unknown"],
    ]
    assert next(line for line in lines if line.startswith("total")).split() == [
        "total", "8", "0", "0", "0", "7", "1", "unknown",
    ]  # fmt: skip
    assert "counted and paid once" in run.stdout
    assert "No API call was made" in run.stdout
    assert f"root:    {store.root}" in run.stdout


def test_stored_prompt_table_is_preferred(
    store: ObjectStore, table: pd.DataFrame, tmp_path: Path
) -> None:
    path = Path(store.root) / PROMPT_TABLE_PATH
    path.parent.mkdir(parents=True)
    table.head(2).to_parquet(path, index=False)
    other = tmp_path / "other.csv"
    other.write_text("prompt_id,prompt\na,one\nb,two\nc,three\n")
    body = plan_json("--partition", DAYS[0], "--root", store.root, FLUX_PROMPTS=str(other))
    assert body["partitions"][0]["images"] == 2
    assert "stored by prompt_table" in body["prompts"]
    assert any("FLUX_PROMPTS" in note for note in body["notes"])
    body = plan_json(
        "--partition", DAYS[0], "--root", str(tmp_path / "empty"), FLUX_PROMPTS=str(other)
    )
    assert body["partitions"][0]["images"] == 3
    assert body["prompts"] == str(other)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--partition", "2026-02-30"), "partition key '2026-02-30': not a daily key"),
        (("--partition", "20261120"), "partition key '20261120': not a daily key"),
        (("--partition-range", "2026-11-21...2026-11-20"), "START is after END"),
        (("--partition-range", "2026-11-20..2026-11-21"), "not a daily key"),
        (("--partition-range", "2026-11-20..."), "write START...END"),
        (("--partition", DAYS[0], "--prompts", "/no/such/table.csv"), "file not found"),
        (("--partition", DAYS[0], "--price-per-image", "-1"), "must be a number >= 0"),
        (("--partition", DAYS[0], "--partition-range", f"{DAYS[0]}...{DAYS[1]}"), "not allowed"),
    ],
)
def test_bad_input_is_a_clear_error(args: tuple[str, ...], message: str, tmp_path: Path) -> None:
    run = plan(*args, "--root", str(tmp_path / "data"))
    assert run.returncode != 0
    assert message in run.stderr
    assert "Traceback" not in run.stderr


def test_a_bad_table_names_its_rows(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("prompt_id,prompt,steps\nok,fine,4\nworse,,12\n")
    run = plan("--partition", DAYS[0], "--prompts", str(bad), "--root", str(tmp_path / "d"))
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    assert "row 2, prompt_id 'worse', field 'prompt': is empty" in run.stderr
    assert "field 'steps'" in run.stderr


def test_daily_keys_span_month_ends() -> None:
    assert daily_keys("2026-02-27...2026-03-01") == ["2026-02-27", "2026-02-28", "2026-03-01"]
    assert daily_keys("2026-11-20") == ["2026-11-20"]


def test_an_expired_job_in_flight_is_flagged(
    store: ObjectStore, table: pd.DataFrame, table_csv: Path, service_env: str
) -> None:
    fox = partition_requests(table, DAYS[0])[0]
    Ledger(store, service_env).record_submitted(
        fox.request_key, "req-fox", datetime.now(UTC) - timedelta(hours=3)
    )
    run = plan(
        "--partition",
        DAYS[0],
        "--prompts",
        str(table_csv),
        "--root",
        store.root,
        "--price-per-image",
        "2",
    )
    assert run.returncode == 0, run.stderr
    assert "1 job(s) in flight were submitted over an hour ago" in run.stdout
    assert "(up to 2 more)" in run.stdout


def test_a_plan_writes_nothing_not_even_the_root(tmp_path: Path, table_csv: Path) -> None:
    root = tmp_path / "never-built"
    body = plan_json("--partition", DAYS[0], "--prompts", str(table_csv), "--root", str(root))
    (day,) = body["partitions"]
    assert day["to_submit"] == 4
    assert not root.exists()
