"""Claims on request keys: real files and the moto S3 server, real threads and processes."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from flux_pipeline.store.claims import UNREADABLE, ClaimInfo, Claims
from flux_pipeline.store.layout import claim_path
from flux_pipeline.store.storage import ObjectStore

#: Spawned workers: the parent runs threads (the moto server, s3fs's loop) that fork would copy.
MP = multiprocessing.get_context("spawn")
WAIT = 120.0


def key(i: int) -> str:
    return hashlib.sha256(f"request-{i}".encode()).hexdigest()


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest) -> ObjectStore:
    name = "local_store" if request.param == "local" else "s3_store"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


def write_dead_claim(store: ObjectStore, request_key: str, *, expired: bool) -> None:
    """A claim made on another machine by a pid that does not exist here."""
    now = datetime.now(UTC)
    renewed = now - timedelta(seconds=600 if expired else 0)
    info = ClaimInfo(request_key, "gone-run", "elsewhere", 4_000_000, "", renewed, renewed, 120.0)
    store.write_atomic(claim_path(request_key), info.to_json())


# Workers of the multi-process tests (top level, so a spawned process can import them).


def claim_many_worker(uri: str, keys: list[str], start: Any, out: Any) -> None:
    claims = Claims(ObjectStore.from_uri(uri))
    start.wait(WAIT)
    mine, others = claims.claim_many(keys)
    out.put((claims.owner, sorted(mine), {k: info.owner for k, info in others.items()}))


def claim_and_exit_worker(uri: str, request_key: str) -> None:
    """Claim, then die without releasing (no cleanup at all)."""
    assert Claims(ObjectStore.from_uri(uri)).claim(request_key)
    os._exit(0)


def claim_and_hold_worker(uri: str, request_key: str, claimed: Any, done: Any) -> None:
    assert Claims(ObjectStore.from_uri(uri)).claim(request_key)
    claimed.set()
    done.wait(WAIT)


def run_to_end(target: Any, *args: Any) -> None:
    process = MP.Process(target=target, args=args)
    process.start()
    process.join(WAIT)
    assert process.exitcode == 0


# Tests.


def test_a_claim_is_exclusive_and_idempotent_for_its_owner(store: ObjectStore) -> None:
    a, b = Claims(store, owner="run-a"), Claims(store, owner="run-b")
    assert a.claim(key(1))
    assert a.claim(key(1))  # already ours
    assert not b.claim(key(1))
    held = b.holder(key(1))
    assert held is not None
    assert (held.owner, held.pid, held.lease_s) == ("run-a", os.getpid(), 120.0)
    assert held.acquired_at.tzinfo is not None
    assert b.is_live(held)
    mine, others = b.claim_many([key(1), key(2)])
    assert mine == {key(2)}
    assert others[key(1)].owner == "run-a"
    assert set(others) == {key(1)}


def test_renew_extends_and_release_frees(store: ObjectStore) -> None:
    a, b = Claims(store, owner="run-a"), Claims(store, owner="run-b")
    assert a.claim_many([key(1), key(2)]) == ({key(1), key(2)}, {})
    first = a.holder(key(1))
    assert first is not None
    assert a.renew([key(1), key(2)]) == set()
    renewed = a.holder(key(1))
    assert renewed is not None
    assert renewed.expires_at > first.expires_at
    assert renewed.acquired_at == first.acquired_at

    a.release([key(1)])
    assert a.holder(key(1)) is None
    assert b.claim(key(1))
    assert a.renew([key(1), key(2)]) == {key(1)}  # key 1 is b's now
    a.release([key(1)])  # not a's: left alone
    holder = b.holder(key(1))
    assert holder is not None
    assert holder.owner == "run-b"
    assert not a.claim(key(1))


def test_an_expired_lease_is_taken_over_and_its_holder_learns_it(store: ObjectStore) -> None:
    short, other = Claims(store, owner="short", lease=0.05), Claims(store, owner="other")
    assert short.claim(key(1))
    time.sleep(0.1)  # the holder's process is alive: only the lease has run out
    held = other.holder(key(1))
    assert held is not None
    assert not other.is_live(held)
    assert other.claim(key(1))
    assert short.renew([key(1)]) == {key(1)}
    assert not short.claim(key(1))


def test_a_claim_of_another_machine_waits_for_its_lease(store: ObjectStore) -> None:
    write_dead_claim(store, key(1), expired=False)
    write_dead_claim(store, key(2), expired=True)
    mine, others = Claims(store).claim_many([key(1), key(2)])
    assert mine == {key(2)}
    assert others[key(1)].owner == "gone-run"


def test_a_dead_local_process_claim_is_taken_over_a_live_one_is_not(store: ObjectStore) -> None:
    run_to_end(claim_and_exit_worker, store.uri(""), key(1))
    claims = Claims(store)
    assert claims.claim(key(1))  # lease still running, but its pid is gone

    claimed, done = MP.Event(), MP.Event()
    holder = MP.Process(target=claim_and_hold_worker, args=(store.uri(""), key(2), claimed, done))
    holder.start()
    try:
        assert claimed.wait(WAIT)
        assert not claims.claim(key(2))
        info = claims.holder(key(2))
        assert info is not None
        assert info.pid == holder.pid
    finally:
        done.set()
        holder.join(WAIT)
    assert holder.exitcode == 0
    assert claims.claim(key(2))


@pytest.mark.parametrize("existing", ["none", "dead"])
def test_threads_racing_for_a_key_have_one_winner(store: ObjectStore, existing: str) -> None:
    keys = [key(i) for i in range(20)]
    if existing == "dead":  # every thread tries the takeover at once
        for k in keys:
            write_dead_claim(store, k, expired=True)
    threads = 6
    start = threading.Barrier(threads)
    results: list[set[str]] = [set() for _ in range(threads)]

    def race(slot: int) -> None:
        claims = Claims(store, owner=f"thread-{slot}")
        start.wait(WAIT)
        results[slot] = claims.claim_many(keys)[0]

    workers = [threading.Thread(target=race, args=(slot,)) for slot in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(WAIT)
    wins = Counter(k for won in results for k in won)
    assert wins == Counter(keys)
    for slot, won in enumerate(results):
        for k in won:
            info = Claims(store).holder(k)
            assert info is not None
            assert info.owner == f"thread-{slot}"


@pytest.mark.parametrize("existing", ["none", "dead"])
def test_processes_racing_over_100_keys_win_each_key_once(
    store: ObjectStore, existing: str
) -> None:
    keys = [key(i) for i in range(100)]
    if existing == "dead":
        for k in keys[::2]:
            write_dead_claim(store, k, expired=True)
    processes = 4
    start, out = MP.Barrier(processes + 1), MP.Queue()
    workers = [
        MP.Process(target=claim_many_worker, args=(store.uri(""), keys, start, out))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    start.wait(WAIT)
    results = [out.get(timeout=WAIT) for _ in workers]
    for worker in workers:
        worker.join(WAIT)
        assert worker.exitcode == 0

    wins = Counter(k for _, mine, _ in results for k in mine)
    assert wins == Counter(keys)
    winner = {k: owner for owner, mine, _ in results for k in mine}
    for owner, mine, others in results:
        assert set(mine) | set(others) == set(keys)
        assert all(winner[k] == held_by for k, held_by in others.items()), owner
    reader = Claims(store)
    assert all((info := reader.holder(k)) and info.owner == winner[k] for k in keys)


def test_keys_are_checked_before_anything_is_claimed(local_store: ObjectStore) -> None:
    claims = Claims(local_store)
    with pytest.raises(ValueError, match="not a request key"):
        claims.claim_many([key(1), "../etc/passwd"])
    assert claims.holder(key(1)) is None
    with pytest.raises(ValueError, match="lease must be positive"):
        Claims(local_store, lease=0)


def test_an_unreadable_claim_is_held_for_a_lease_then_taken_over(
    store: ObjectStore, caplog: pytest.LogCaptureFixture
) -> None:
    """A corrupt claim does not block its key for ever, nor fail whoever reads it."""
    corrupt = key(1)
    store.write_atomic(claim_path(corrupt), b"{not json " + uuid.uuid4().hex.encode())
    claims = Claims(store)
    assert claims.claim_many([corrupt, key(2)])[0] == {key(2)}  # written just now: held
    holder = claims.holder(corrupt)
    assert holder is not None
    assert holder.owner == UNREADABLE
    assert claims.is_live(holder)
    assert claims.holders([corrupt, key(2), key(3)]).keys() == {corrupt, key(2)}
    # one warning per version of the object, however often it is read
    [warning] = [r.getMessage() for r in caplog.records if r.name == "flux_pipeline.store.claims"]
    assert f"unreadable claim _claims/{corrupt}.json" in warning
    assert f"delete {store.uri(claim_path(corrupt))}" in warning

    time.sleep(0.6)
    later = Claims(store, lease=0.5)  # by now a lease of 0.5 s has run out since the write
    assert later.claim(corrupt)
    taken = later.holder(corrupt)
    assert taken is not None
    assert taken.owner == later.owner
