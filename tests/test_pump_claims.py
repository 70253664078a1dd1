"""The pump's claims: a batch of pending rows taken `sending` in one statement
(`LedgerBatch.begin_all`), exactly as one `begin` per key would, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from pipeline.models import Status
from pipeline.store.engine import engine_for
from pipeline.store.ledger import Ledger

pytestmark = pytest.mark.state_backends     # each test on SQLite and on PostgreSQL


@pytest.fixture
def engine(config):
    return engine_for(config)


@pytest.fixture
def ledger(engine):
    ledger = Ledger(engine)
    yield ledger
    ledger.close()


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
