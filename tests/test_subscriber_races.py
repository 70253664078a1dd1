"""Two writers adding the same address at once (two `serve` processes taking the same sign-up,
an import beside a form): the second finds the first's row instead of failing, on SQLite and on
PostgreSQL."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import create_engine, event, func, select

from pipeline.store import optin
from pipeline.store import subscribers as store
from pipeline.store.engine import engine_for
from pipeline.store.schema import subscribers

pytestmark = pytest.mark.state_backends     # each test on SQLite and on PostgreSQL


def _other_writer_first(engine, write) -> None:  # type: ignore[no-untyped-def]
    """Run `write(other_engine)` (committed) just before `engine`'s next INSERT into subscribers:
    the moment a second process's row lands between a writer's read and its own insert."""
    other = create_engine(engine.url.render_as_string(hide_password=False))
    fired = []

    @event.listens_for(engine, "before_cursor_execute")
    def _race(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if not fired and statement.lstrip().upper().startswith("INSERT INTO SUBSCRIBERS"):
            fired.append(True)
            write(other)

    return fired


def _rows(engine, address: str) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(subscribers)
                            .where(subscribers.c.email_key == address.lower())).scalar_one()


def test_upsert_when_another_process_adds_the_address_first(config):
    engine = engine_for(config)
    fired = _other_writer_first(engine, lambda other: store.upsert(other, "ada@example.com", "Ada"))
    assert store.upsert(engine, "Ada@example.com", "Ada Lovelace") == "updated"
    assert fired and _rows(engine, "ada@example.com") == 1
    assert store.find(engine, address="ada@example.com").name == "Ada Lovelace"


def test_sign_up_when_another_process_signs_the_address_up_first(config):
    engine = engine_for(config)
    fired = _other_writer_first(engine, lambda other: optin.sign_up(other, "bob@example.com"))
    result = optin.sign_up(engine, "bob@example.com", name="Bob")
    assert fired and _rows(engine, "bob@example.com") == 1
    # The other sign-up sent the confirmation a moment ago: this one sends none.
    assert result.subscriber.status == store.SubscriberStatus.PENDING and not result.send_confirmation


def test_suppress_when_another_process_adds_the_address_first(config):
    engine = engine_for(config)
    fired = _other_writer_first(engine, lambda other: store.upsert(other, "eve@example.com"))
    store.suppress(engine, "eve@example.com", reason="asked by phone")
    assert fired and _rows(engine, "eve@example.com") == 1
    assert store.find(engine, address="eve@example.com").status == store.SubscriberStatus.SUPPRESSED


def test_many_sign_ups_of_one_address_at_once(config):
    engines = [create_engine(engine_for(config).url.render_as_string(hide_password=False))
               for _ in range(6)]
    start, errors, confirmations = threading.Barrier(len(engines)), [], []

    def sign_up(engine) -> None:  # type: ignore[no-untyped-def]
        start.wait()
        try:
            confirmations.append(optin.sign_up(engine, "zoe@example.com").send_confirmation)
        except Exception as exc:  # the test reports any failure of any writer
            errors.append(exc)

    threads = [threading.Thread(target=sign_up, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == [] and _rows(engines[0], "zoe@example.com") == 1
    assert confirmations.count(True) == 1      # one confirmation email, however many forms
