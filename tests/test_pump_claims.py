"""The pump's claims: a batch of pending rows taken `sending` in one statement
(`LedgerBatch.begin_all`), exactly as one `begin` per key would, and the rows they are fed,
planned a chunk at a time while the first are sent (`Ledger.planning`), on SQLite and
PostgreSQL."""

from __future__ import annotations

import itertools

import pytest
from sqlalchemy import text

from pipeline.models import Receipt, Status

pytestmark = pytest.mark.state_backends     # each test on SQLite and on PostgreSQL


def _rows(engine) -> dict[str, tuple[str, int]]:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return {k: (s, a) for k, s, a in conn.execute(text("SELECT key, status, attempts FROM deliveries"))}


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 9, 33])
def test_a_claim_takes_exactly_the_pending_keys_once(ledger, engine, size):
    keys = [f"news:ed:{i:03}" for i in range(size)]
    for key in [*keys, "news:ed:other"]:
        assert ledger.plan(key=key, channel="news", edition="ed", kind="email")
    busy = set(keys[1::3])                       # already taken by another run
    for key in busy:
        assert ledger.begin(key)
    with ledger.batch() as batch:
        taken = batch.begin_all(keys)
    assert taken == set(keys) - busy
    rows = _rows(engine)
    # Each key taken once (a batch is padded to a power of two with a repeated key), the others
    # left as they were, and nothing outside the batch touched.
    assert {k: rows[k] for k in keys} == {k: (Status.SENDING.value, 1) for k in keys}
    assert rows["news:ed:other"] == (Status.PENDING.value, 0)
    with ledger.batch() as batch:
        assert batch.begin_all(keys) == set()     # nothing pending any more: nothing taken
        assert batch.begin_all([]) == set()
    assert _rows(engine) == rows


def test_a_claim_that_fails_takes_nothing(ledger, engine):
    keys = ["news:ed:a", "news:ed:b"]
    for key in keys:
        ledger.plan(key=key, channel="news", edition="ed", kind="email")
    with pytest.raises(RuntimeError), ledger.batch() as batch:
        assert batch.begin_all(keys) == set(keys)
        raise RuntimeError("the publisher stops before the claim is committed")
    assert _rows(engine) == {k: (Status.PENDING.value, 0) for k in keys}


# -- planning in chunks (`Ledger.planning`): what the pump's claims are fed ---------------------

PREFIX = "news:ed:"


def _subscribe(engine, count: int, *, unsubscribed: frozenset[int] = frozenset()) -> None:  # type: ignore[no-untyped-def]
    """`count` subscribers at once (more than the first chunks hold); `unsubscribed`: numbers of
    those who left."""
    from datetime import UTC, datetime

    from sqlalchemy import insert

    from pipeline.store.schema import subscribers

    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(insert(subscribers), [
            {"uid": f"{i:032x}", "email": f"r{i:05}@example.com", "email_key": f"r{i:05}@example.com",
             "name": None, "tags": "", "status": "unsubscribed" if i in unsubscribed else "active",
             "created_at": now, "updated_at": now} for i in range(count)])


def _planning(ledger, counts: list[int] | None = None):  # type: ignore[no-untyped-def]
    return ledger.planning(channel="news", edition="ed", key_prefix=PREFIX, dry_run=False,
                           planned=(counts if counts is not None else []).append)


def test_planning_streams_each_pending_recipient_once_in_key_order(ledger, engine):
    _subscribe(engine, 1200, unsubscribed=frozenset({7, 700}))
    # An earlier run planned a few and sent one of them.
    assert ledger.plan_recipients(channel="news", edition="ed", key_prefix=PREFIX, dry_run=False,
                                  upto="r00003@example.com") == 4
    ledger.begin(PREFIX + "r00001@example.com")
    ledger.succeed(Receipt(key=PREFIX + "r00001@example.com", remote_id="<1@x>"))
    counts: list[int] = []
    streamed = []
    for key, email, _, _ in _planning(ledger, counts):
        row = ledger.get(key)            # read only once its chunk is committed, never before
        assert row is not None and row.status == Status.PENDING.value
        assert email == key.removeprefix(PREFIX)
        streamed.append(key)
    expected = [f"{PREFIX}r{i:05}@example.com" for i in range(1200) if i not in (1, 7, 700)]
    assert streamed == expected
    assert sum(counts) == 1200 - 2 - 4      # the active ones without a row yet
    assert _rows(engine)[PREFIX + "r00001@example.com"] == (Status.SENT.value, 1)


def test_planning_stopped_half_way_leaves_planned_rows_that_a_rerun_sends(ledger, engine):
    _subscribe(engine, 900)
    first = _planning(ledger)
    taken = [key for key, *_ in itertools.islice(first, 300)]
    first.close()                        # the publisher stopped: planning stops after its chunk
    rows = _rows(engine)
    assert set(taken) <= rows.keys()
    assert all(status == Status.PENDING.value for status, _ in rows.values())
    with ledger.batch() as batch:
        assert batch.begin_all(taken) == set(taken)
    again = [key for key, *_ in _planning(ledger)]
    assert again == [f"{PREFIX}r{i:05}@example.com" for i in range(300, 900)]
    assert len(_rows(engine)) == 900


def test_a_planning_error_reaches_the_reader(ledger, engine):
    _subscribe(engine, 10)

    def refuse(count: int) -> None:
        raise RuntimeError("planning failed")

    stream = ledger.planning(channel="news", edition="ed", key_prefix=PREFIX, dry_run=False, planned=refuse)
    with pytest.raises(RuntimeError, match="planning failed"):
        list(stream)
