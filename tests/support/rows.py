"""Lineage rows for tests."""

from __future__ import annotations

from datetime import UTC, datetime

from flux_pipeline.protocol import request_key
from flux_pipeline.store.lineage import LineageRow

#: The service the rows say made them.
BACKEND = "https://api.example.com"


def make_row(
    prompt_id: str, *, status: str = "COMPLETED", cached: bool = False, backend: str = BACKEND
) -> LineageRow:
    done = status == "COMPLETED"
    return LineageRow(
        prompt_id=prompt_id,
        prompt=f"a picture of {prompt_id}",
        seed=7,
        steps=4,
        aspect_ratio="1:1",
        model="fast-flux-schnell",
        request_id=f"req-{prompt_id}",
        status=status,
        error=None if done else "blocked by the safety filter",
        inference_time=1.25 if done else None,
        queue_time=None,
        cost=0.003 if done else None,
        attempts=4,
        submitted_at=datetime(2026, 11, 20, 1, 2, 3, tzinfo=UTC),
        completed_at=datetime(2026, 11, 20, 1, 2, 5, 500000, tzinfo=UTC),
        image_uri=f"/root/images/{prompt_id}-7.jpg" if done else None,
        image_sha256="ab" * 32 if done else None,
        image_bytes=1234 if done else None,
        content_type="image/jpeg" if done else None,
        width=1024 if done else None,
        height=1024 if done else None,
        request_key=request_key("fast-flux-schnell", prompt_id, 7, 4, "1:1"),
        cached=cached,
        backend=backend,
    )
