"""The synchronous facade: Segmind-SDK-shaped calls on top of the engine."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from loopback import TEST_KEY
from segmind_support import JPEG

from flux_pipeline.segmind import (
    AuthenticationError,
    InferenceFailed,
    InferenceTimeout,
    InsufficientCredits,
    SegmindClient,
    SegmindError,
)


def test_run_returns_the_image_bytes(emulator: Any) -> None:
    with SegmindClient(api_key=TEST_KEY, base_url=emulator.url + "/v1") as client:
        image = client.run("a red bicycle", seed=7, steps=2, aspect_ratio="16:9")

    assert image.startswith(JPEG)
    assert client.stats.completed == 1
    assert TEST_KEY not in repr(client)


def test_submit_async_hands_back_the_request_id_then_the_image(emulator: Any) -> None:
    with SegmindClient(api_key=TEST_KEY, base_url=emulator.url) as client:
        jobs = [client.submit_async(f"a tower #{i}", seed=i) for i in range(3)]
        images = [job.wait(timeout=30) for job in jobs]

    assert all(image.startswith(JPEG) for image in images)
    assert len({job.request_id for job in jobs}) == 3
    assert all(job.request_id for job in jobs)
    assert emulator.stats()["requests"]["submit"] == 3


def test_a_failed_inference_raises_with_its_detail(emulator: Any) -> None:
    with SegmindClient(api_key=TEST_KEY, base_url=emulator.url) as client:
        job = client.submit_async("an nsfw scene")
        with pytest.raises(InferenceFailed) as raised:
            job.wait(timeout=30)

    assert "NSFW" in raised.value.detail
    assert raised.value.request_id == job.request_id


def test_waiting_too_short_raises_timeout_and_the_job_lives_on(emulator_factory: Any) -> None:
    emu = emulator_factory(workers=1, step_time=0.25)
    with SegmindClient(api_key=TEST_KEY, base_url=emu.url) as client:
        job = client.submit_async("a slow sunrise")
        with pytest.raises(InferenceTimeout) as raised:
            job.wait(timeout=0.01)
        assert raised.value.request_id == job.request_id
        assert job.wait(timeout=30).startswith(JPEG)


def test_refused_key_and_spent_credits_raise_their_own_errors(emulator_factory: Any) -> None:
    emu = emulator_factory(workers=1, step_time=0.01, credits=0)
    wrong = "SG_fedcba9876543210"
    with (
        SegmindClient(api_key=wrong, base_url=emu.url) as client,
        pytest.raises(AuthenticationError) as refused,
    ):
        client.run("a boat")
    assert wrong not in str(refused.value)

    with (
        SegmindClient(api_key=TEST_KEY, base_url=emu.url) as client,
        pytest.raises(InsufficientCredits),
    ):
        client.run("a boat")


def test_closing_with_an_outstanding_job_makes_its_wait_raise(emulator_factory: Any) -> None:
    emu = emulator_factory(workers=1, step_time=0.5)
    client = SegmindClient(api_key=TEST_KEY, base_url=emu.url)
    job = client.submit_async("a long night")
    client.close()
    raised: list[BaseException] = []

    def wait() -> None:
        try:
            job.wait()  # no timeout: must not block forever on a closed client
        except BaseException as exc:
            raised.append(exc)

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    waiter.join(timeout=30)  # a guard against a hang, not a timing assertion

    assert not waiter.is_alive()
    assert len(raised) == 1
    assert isinstance(raised[0], SegmindError)
    assert "closed" in str(raised[0])
    assert job.request_id is not None
    assert job.request_id in str(raised[0])
