"""The subscriber store: CSV import, upsert, unsubscribe/forget, paging, export, tokens, and the
`subscribers` command group run the way a user runs it."""

from __future__ import annotations

import csv
import io
import json
import random
import shutil
from datetime import datetime
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.intake.textfile import NotUtf8, read_utf8
from pipeline.store import subscribers as store
from pipeline.store.engine import engine_for
from pipeline.store.subscribers import SubscriberError

pytestmark = pytest.mark.state_backends     # each test on SQLite and on PostgreSQL

COUNTS_ZERO = dict(added=0, updated=0, unchanged=0, kept_unsubscribed=0, resubscribed=0)


def _csv(tmp_path: Path, text: str, name: str = "subscribers.csv", *, encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def _counts(result: store.ImportResult) -> dict[str, int]:
    return {k: getattr(result, k) for k in COUNTS_ZERO}


def _all(engine, **kw) -> list[store.Subscriber]:
    return list(store.iter_subscribers(engine, **kw))


def _by_email(engine) -> dict[str, store.Subscriber]:
    return {s.email: s for s in store.iter_subscribers(engine)}


# -- CSV import ---------------------------------------------------------------------------------

def test_import_email_name_tags(engine, tmp_path):
    path = _csv(tmp_path, "email,name,tags\n"
                          "ada@example.com,Ada Lovelace,news;events\n"
                          "bob@example.com,,\n"
                          "cy@example.com,Cy,\"a, b|c\"\n")
    result = store.import_csv(engine, path)
    assert _counts(result) == {**COUNTS_ZERO, "added": 3}
    assert result.errors == []
    subs = _by_email(engine)
    assert list(subs) == ["ada@example.com", "bob@example.com", "cy@example.com"]
    assert subs["ada@example.com"].name == "Ada Lovelace"
    assert subs["ada@example.com"].tags == ("news", "events")
    assert subs["ada@example.com"].status == "active"
    assert subs["bob@example.com"].name is None
    assert subs["bob@example.com"].tags == ()
    assert subs["cy@example.com"].tags == ("a", "b", "c")
    assert store.count(engine) == 3


def test_import_header_other_case_and_extra_columns(engine, tmp_path):
    path = _csv(tmp_path, "Company, EMAIL ,Name,TAGS,Notes\n"
                          "ACME,ada@example.com,Ada,vip,first\n"
                          "Initech,bob@example.com,Bob,,\n")
    result = store.import_csv(engine, path)
    assert result.errors == []
    assert result.added == 2
    subs = _by_email(engine)
    assert subs["ada@example.com"].name == "Ada"
    assert subs["ada@example.com"].tags == ("vip",)
    assert subs["bob@example.com"].name == "Bob"


def test_import_bom_prefixed_utf8(engine, tmp_path):
    path = _csv(tmp_path, "\ufeffemail,name\nzoe@example.com,Zoë Ångström\n")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    result = store.import_csv(engine, path)
    assert result.errors == []
    assert result.added == 1
    assert _by_email(engine)["zoe@example.com"].name == "Zoë Ångström"


def test_import_reports_bad_rows_with_file_line_numbers(engine, tmp_path):
    path = _csv(tmp_path, "email,name,tags\n"          # 1
                          "ada@example.com,Ada,\n"     # 2
                          "not-an-address,X,\n"        # 3
                          "bob@example.com,\"Bob\n"    # 4  (quoted name spans two lines)
                          "Builder\",\n"               # 5
                          "x@localhost,Y,\n"           # 6
                          ",Empty,\n"                  # 7
                          "\n"                         # 8  (blank line, skipped)
                          "cy@example.com,Cy,\n"       # 9
                          "also bad,Z,\n")             # 10
    result = store.import_csv(engine, path)
    assert [line for line, _ in result.errors] == [3, 6, 7, 10]
    messages = dict(result.errors)
    assert messages[3].startswith("not-an-address: ")
    assert messages[6].startswith("x@localhost: ")
    assert messages[7].startswith("(empty): ")
    assert messages[10].startswith("also bad: ")
    assert result.added == 3
    subs = _by_email(engine)
    assert sorted(subs) == ["ada@example.com", "bob@example.com", "cy@example.com"]
    assert subs["bob@example.com"].name == "Bob\nBuilder"


def test_import_bad_multiline_row_is_reported_at_its_first_line(engine, tmp_path):
    path = _csv(tmp_path, "email,name\n"                 # 1
                          "ada@example.com,Ada\n"        # 2
                          "not-an-address,\"Two\n"       # 3  the bad row starts here
                          "lines\"\n")                   # 4
    result = store.import_csv(engine, path)
    assert [line for line, _ in result.errors] == [3]


def test_import_without_email_column_is_an_error_naming_line_1(engine, tmp_path):
    path = _csv(tmp_path, "mail,name\nada@example.com,Ada\n", name="nomail.csv")
    with pytest.raises(SubscriberError) as info:
        store.import_csv(engine, path)
    message = str(info.value)
    assert "nomail.csv" in message
    assert "line 1" in message
    assert "email" in message
    assert store.count(engine) == 0


def test_import_empty_file_is_an_error_naming_line_1(engine, tmp_path):
    path = _csv(tmp_path, "", name="empty.csv")
    with pytest.raises(SubscriberError, match=r"empty\.csv: line 1: "):
        store.import_csv(engine, path)


def test_import_non_utf8_file_is_a_one_line_error(engine, tmp_path):
    path = _csv(tmp_path, "email,name\nzoe@example.com,Zoë\n", name="latin1.csv", encoding="latin-1")
    with pytest.raises(SubscriberError) as info:
        store.import_csv(engine, path)
    message = str(info.value)
    assert "\n" not in message
    assert "latin1.csv" in message
    assert "UTF-8" in message
    assert store.count(engine) == 0


def test_import_normalizes_addresses(engine, tmp_path):
    path = _csv(tmp_path, "email,name\n  Ada@Example.COM  ,Ada\nbob@EXAMPLE.org,Bob\n")
    result = store.import_csv(engine, path)
    assert result.errors == []
    assert [s.email for s in _all(engine)] == ["Ada@example.com", "bob@example.org"]


def test_normalize_lower_cases_the_domain_only():
    assert store.normalize(" Ada@Example.COM ") == "Ada@example.com"
    with pytest.raises(ValueError):
        store.normalize("not-an-address")


def test_addresses_are_unique_case_insensitively(engine, tmp_path):
    path = _csv(tmp_path, "email,name\nada@example.com,Ada\nADA@EXAMPLE.COM,\n")
    result = store.import_csv(engine, path)
    assert result.added == 1
    assert result.unchanged == 1
    assert store.count(engine) == 1
    assert store.upsert(engine, "Ada@Example.Com") == "unchanged"
    assert [s.email for s in _all(engine)] == ["ada@example.com"]


def test_reimporting_the_same_file_is_idempotent(engine, tmp_path):
    path = _csv(tmp_path, "email,name,tags\n"
                          "ada@example.com,Ada,a;b\n"
                          "bob@example.com,Bob,\n"
                          "cy@example.com,,c\n")
    first = store.import_csv(engine, path)
    assert _counts(first) == {**COUNTS_ZERO, "added": 3}
    before = _all(engine)
    second = store.import_csv(engine, path)
    assert _counts(second) == {**COUNTS_ZERO, "unchanged": 3}
    assert second.errors == []
    assert store.count(engine) == 3
    assert _all(engine) == before


def test_reimport_updates_a_changed_name_and_merges_tags(engine, tmp_path):
    store.import_csv(engine, _csv(tmp_path, "email,name,tags\nada@example.com,Ada,x;y\n", name="1.csv"))
    result = store.import_csv(engine, _csv(tmp_path, "email,name,tags\nada@example.com,Ada Lovelace,y;z\n",
                                           name="2.csv"))
    assert _counts(result) == {**COUNTS_ZERO, "updated": 1}
    (ada,) = _all(engine)
    assert ada.name == "Ada Lovelace"
    assert ada.tags == ("x", "y", "z")


def test_reimport_keeps_unsubscribed_unless_resubscribe(engine, tmp_path):
    path = _csv(tmp_path, "email,name\nada@example.com,Ada\nbob@example.com,Bob\n")
    store.import_csv(engine, path)
    assert store.unsubscribe(engine, "ada@example.com") is True

    again = store.import_csv(engine, path)
    assert _counts(again) == {**COUNTS_ZERO, "unchanged": 1, "kept_unsubscribed": 1}
    assert _by_email(engine)["ada@example.com"].status == "unsubscribed"

    back = store.import_csv(engine, path, resubscribe=True)
    assert _counts(back) == {**COUNTS_ZERO, "unchanged": 1, "resubscribed": 1}
    ada = _by_email(engine)["ada@example.com"]
    assert ada.status == "active"
    assert ada.unsubscribed_at is None
    assert store.count(engine) == 2


def test_upsert_with_repeated_tags_is_idempotent(engine):
    assert store.upsert(engine, "ada@example.com", "Ada", ("x", "x")) == "added"
    assert store.upsert(engine, "ada@example.com", "Ada", ("x", "x")) == "unchanged"


# -- large imports: batches, streaming ----------------------------------------------------------

def _expected_import(existing: dict[str, dict], rows: list[tuple[str, str, str]], *,
                     resubscribe: bool) -> tuple[dict[str, int], list[tuple[str, str | None, tuple, str]]]:
    """What importing `rows` (email, name, tags cells; all valid addresses) into a database holding
    `existing` (key -> email, name, tags, status, in id order) must give, worked out one row at a
    time from the documented rules: the counts, and every subscriber (email, name, tags, status)
    in id order. Written independently of the store, so the batched import is checked against the
    rules rather than against itself."""
    state = {key: dict(value, tags=list(value["tags"])) for key, value in existing.items()}
    counts = dict(COUNTS_ZERO)
    for address, raw_name, raw_tags in rows:
        local, _, domain = address.strip().partition("@")
        email, name = f"{local}@{domain.lower()}", raw_name.strip() or None
        tags = list(dict.fromkeys(t for t in raw_tags.split(";") if t))
        key = email.lower()
        if key not in state:
            state[key] = dict(email=email, name=name, tags=tags, status="active")
            counts["added"] += 1
            continue
        known = state[key]
        if known["status"] == "unsubscribed" and not resubscribe:
            counts["kept_unsubscribed"] += 1
            continue
        merged = known["tags"] + [t for t in tags if t not in known["tags"]]
        changed = bool(name and name != known["name"]) or merged != known["tags"]
        known["name"] = name if name else known["name"]
        known["tags"] = merged
        if known["status"] == "unsubscribed":
            known["status"] = "active"
            counts["resubscribed"] += 1
        else:
            counts["updated" if changed else "unchanged"] += 1
    subs = [(v["email"], v["name"], tuple(v["tags"]), v["status"]) for v in state.values()]
    return counts, subs


def _state(engine) -> list[tuple[str, str | None, tuple, str]]:
    return [(s.email, s.name, s.tags, s.status) for s in _all(engine)]


def _existing(engine) -> dict[str, dict]:
    return {s.email.lower(): dict(email=s.email, name=s.name, tags=s.tags, status=s.status)
            for s in _all(engine)}


@pytest.mark.parametrize("resubscribe", [False, True], ids=["keep", "resubscribe"])
def test_import_of_many_rows_with_repeats_across_batches_counts_as_row_by_row(engine, tmp_path,
                                                                              resubscribe):
    rng = random.Random(14)
    # Some addresses are already there, a few of them unsubscribed.
    store.import_csv(engine, _csv(tmp_path, "email,name,tags\n" + "".join(
        f"user{i}@example.com,Old {i},old\n" for i in range(0, 1200, 7)), name="before.csv"))
    for i in range(0, 1200, 49):
        store.unsubscribe(engine, f"user{i}@example.com")
    existing = _existing(engine)

    rows: list[tuple[str, str, str]] = []
    lines, bad_lines = ["email,name,tags"], []
    for _ in range(2500):
        if rng.random() < 0.02:
            bad_lines.append(len(lines) + 1)
            lines.append(f"broken{rng.randrange(100)}.example.com,X,")
            continue
        i = rng.randrange(1200)          # ~2,500 rows over 1,200 addresses: most come back, in any batch
        local = rng.choice([f"user{i}", f"User{i}", f"USER{i}"])
        address = f"{local}@{rng.choice(['example.com', 'Example.COM'])}"
        name = rng.choice(["", "", f"Name {i}", f"Name {i} v{rng.randrange(3)}", f"  Name {i}  "])
        tags = ";".join(rng.sample(["a", "b", "c", "d"], rng.randrange(3)))
        rows.append((address, name, tags))
        lines.append(f"{address},{name},{tags}")
    assert len(rows) > 2 * store.IMPORT_BATCH
    path = _csv(tmp_path, "\n".join(lines) + "\n")

    counts, subs = _expected_import(existing, rows, resubscribe=resubscribe)
    result = store.import_csv(engine, path, resubscribe=resubscribe)

    assert _counts(result) == counts
    assert counts["kept_unsubscribed" if not resubscribe else "resubscribed"] > 0
    assert counts["updated"] > 0 and counts["unchanged"] > 0 and counts["added"] > 0
    assert [line for line, _ in result.errors] == bad_lines
    assert all(message.startswith("broken") for _, message in result.errors)
    assert _state(engine) == subs


@pytest.mark.parametrize("resubscribe", [False, True], ids=["keep", "resubscribe"])
def test_unsubscribed_address_repeated_across_a_batch_boundary(engine, tmp_path, resubscribe):
    store.import_csv(engine, _csv(tmp_path, "email,name,tags\nada@example.com,Ada,x\n"
                                            "bob@example.com,Bob,\n", name="before.csv"))
    store.unsubscribe(engine, "ada@example.com")
    store.unsubscribe(engine, "bob@example.com")
    filler = [f"f{i}@example.com,,\n" for i in range(2 * store.IMPORT_BATCH)]
    last_of_first = store.IMPORT_BATCH - 1
    # ada: last row of the first batch, then first row of the second; bob: twice in the second.
    filler[last_of_first] = "ada@example.com,Ada Lovelace,y\n"
    filler[last_of_first + 1] = "ADA@example.com,Ada King,z\n"
    filler[last_of_first + 5] = "bob@example.com,,t\n"
    filler[last_of_first + 9] = "bob@example.com,,t\n"
    result = store.import_csv(engine, _csv(tmp_path, "email,name,tags\n" + "".join(filler)),
                              resubscribe=resubscribe)
    added = 2 * store.IMPORT_BATCH - 4
    subs = _by_email(engine)
    if resubscribe:
        assert _counts(result) == {**COUNTS_ZERO, "added": added, "resubscribed": 2, "updated": 1,
                                   "unchanged": 1}
        assert (subs["ada@example.com"].status, subs["ada@example.com"].name) == ("active", "Ada King")
        assert subs["ada@example.com"].tags == ("x", "y", "z")
        assert subs["ada@example.com"].unsubscribed_at is None
        assert (subs["bob@example.com"].status, subs["bob@example.com"].tags) == ("active", ("t",))
    else:
        assert _counts(result) == {**COUNTS_ZERO, "added": added, "kept_unsubscribed": 4}
        assert (subs["ada@example.com"].status, subs["ada@example.com"].name) == ("unsubscribed", "Ada")
        assert subs["ada@example.com"].tags == ("x",)
        assert subs["ada@example.com"].unsubscribed_at is not None
        assert (subs["bob@example.com"].status, subs["bob@example.com"].tags) == ("unsubscribed", ())
    assert store.count(engine) == added + 2


def test_import_non_utf8_byte_far_into_the_file_names_its_line_and_imports_nothing(engine, tmp_path):
    lines = ["email,name"] + [f"user{i}@example.com,User {i}" for i in range(2, 2501)]
    lines[1799] = "zoe@example.com,Zoë"                         # line 1,800, after a whole batch
    path = _csv(tmp_path, "\n".join(lines) + "\n", name="mixed.csv", encoding="latin-1")
    with pytest.raises(SubscriberError) as info:
        store.import_csv(engine, path)
    message = str(info.value)
    assert message == f"{path}: line 1800: not UTF-8 text (byte 0xEB); save the CSV as UTF-8"
    with pytest.raises(NotUtf8) as whole:                       # what reading the whole file says
        read_utf8(path)
    assert str(whole.value) in message
    assert store.count(engine) == 0                             # the rows before it rolled back


def test_import_truncated_utf8_at_the_end_names_the_last_line(engine, tmp_path):
    path = tmp_path / "cut.csv"
    path.write_bytes("email,name\nada@example.com,Ad\u00e9".encode()[:-1])
    with pytest.raises(SubscriberError, match=r"line 2: not UTF-8 text \(byte 0xC3\)"):
        store.import_csv(engine, path)


def test_import_multiline_field_far_into_the_file_is_reported_at_its_first_line(engine, tmp_path):
    lines = ["email,name"] + [f"user{i}@example.com,User {i}" for i in range(2, 1501)]
    lines.append('not-an-address,"Three\nline\nname"')       # starts on line 1,501
    lines.append('cy@example.com,"Cy\r\nCrlf"')               # line 1,504, spans two lines
    lines += ["also bad,Z", "dee@example.com,Dee"]            # lines 1,506 and 1,507
    result = store.import_csv(engine, _csv(tmp_path, "\n".join(lines) + "\n"))
    assert [line for line, _ in result.errors] == [1501, 1506]
    assert result.errors[0][1].startswith("not-an-address: ")
    assert result.added == 1499 + 2
    assert _by_email(engine)["cy@example.com"].name == "Cy\r\nCrlf"


# -- unsubscribe / forget -----------------------------------------------------------------------

def test_unsubscribe_keeps_the_row(engine):
    store.upsert(engine, "ada@example.com", "Ada")
    store.upsert(engine, "bob@example.com", "Bob")
    assert store.unsubscribe(engine, "ADA@example.com") is True
    subs = _by_email(engine)
    assert subs["ada@example.com"].status == "unsubscribed"
    assert subs["ada@example.com"].unsubscribed_at is not None
    assert subs["bob@example.com"].status == "active"
    assert store.count(engine) == 2
    assert store.count(engine, "unsubscribed") == 1


def test_forget_deletes_the_row(engine):
    store.upsert(engine, "ada@example.com", "Ada")
    store.upsert(engine, "bob@example.com", "Bob")
    assert store.forget(engine, "Ada@Example.com") is True
    assert list(_by_email(engine)) == ["bob@example.com"]
    assert store.upsert(engine, "ada@example.com") == "added"   # can be imported again


@pytest.mark.parametrize("operation", [store.unsubscribe, store.forget], ids=["unsubscribe", "forget"])
def test_unsubscribe_and_forget_reject_invalid_and_unknown(engine, operation):
    store.upsert(engine, "ada@example.com")
    with pytest.raises(ValueError):
        operation(engine, "not-an-address")
    assert operation(engine, "nobody@example.com") is False
    assert [(s.email, s.status) for s in _all(engine)] == [("ada@example.com", "active")]


# -- streaming and export -----------------------------------------------------------------------

EMAILS = [f"user{i:02d}@example.com" for i in range(10)]


@pytest.fixture
def ten(engine):
    # insertion order deliberately differs from alphabetical order
    emails = list(reversed(EMAILS))
    for e in emails:
        store.upsert(engine, e, name=e.split("@")[0])
    return emails


@pytest.mark.parametrize("page", [1, 3, 5, 10, 1000])
def test_iter_subscribers_pages_in_insertion_order(engine, ten, page):
    assert [s.email for s in store.iter_subscribers(engine, page=page)] == ten


def test_iter_subscribers_status_filter_with_pages(engine, ten):
    gone = [ten[i] for i in (1, 4, 7, 8)]
    for e in gone:
        store.unsubscribe(engine, e)
    active = [s.email for s in store.iter_subscribers(engine, status="active", page=3)]
    unsubscribed = [s.email for s in store.iter_subscribers(engine, status="unsubscribed", page=3)]
    assert active == [e for e in ten if e not in gone]
    assert unsubscribed == gone


def test_export_csv(engine):
    store.upsert(engine, "ada@example.com", "Ada, Countess", ("x", "y"))
    store.upsert(engine, "bob@example.com")
    store.unsubscribe(engine, "bob@example.com")
    out = io.StringIO()
    assert store.export_csv(engine, out) == 2
    text = out.getvalue()
    assert text.splitlines()[0] == \
        "email,name,tags,status,subscribed_at,consent_at,consent_source,status_reason"
    rows = list(csv.reader(io.StringIO(text)))
    assert len(rows) == 3
    assert rows[1][:4] == ["ada@example.com", "Ada, Countess", "x,y", "active"]
    assert rows[2][:4] == ["bob@example.com", "", "", "unsubscribed"]
    for row in rows[1:]:
        datetime.fromisoformat(row[4])

    only_active = io.StringIO()
    assert store.export_csv(engine, only_active, status="active") == 1
    assert [r[0] for r in csv.reader(io.StringIO(only_active.getvalue()))] == ["email", "ada@example.com"]


# -- tokens -------------------------------------------------------------------------------------

@pytest.fixture
def ada(engine) -> store.Subscriber:
    store.upsert(engine, "ada@example.com", "Ada")
    store.upsert(engine, "bob@example.com", "Bob")
    return _by_email(engine)["ada@example.com"]


def test_token_is_deterministic_keyed_and_names_no_address(ada):
    t = store.token(ada.uid, ada.email, "s3cret")
    assert t == store.token(ada.uid, ada.email, "s3cret")
    assert t != store.token(ada.uid, ada.email, "other")
    assert t != store.token(ada.uid, "bob@example.com", "s3cret")
    uid, dot, mac = t.partition(".")
    assert (uid, dot) == (ada.uid, ".")
    assert len(mac) == 40
    assert all(c in "0123456789abcdef" for c in mac)
    assert ada.email not in t
    assert "example" not in t.lower()
    assert "@" not in t


def test_resolve_token(engine, ada):
    secret = "s3cret"
    good = store.token(ada.uid, ada.email, secret)
    resolved = store.resolve_token(engine, good, secret)
    assert resolved is not None
    assert (resolved.email, resolved.uid, resolved.name) == ("ada@example.com", ada.uid, "Ada")

    last = good[-1]
    forged = good[:-1] + ("0" if last != "0" else "1")
    assert store.resolve_token(engine, forged, secret) is None
    mid = len(ada.uid) + 10
    forged_mid = good[:mid] + ("a" if good[mid] != "a" else "b") + good[mid + 1:]
    assert store.resolve_token(engine, forged_mid, secret) is None
    assert store.resolve_token(engine, good, "wrong") is None
    for malformed in ("abc", "", ada.uid, f"{ada.uid}.", f".{good.split('.')[1]}", good + "0", good[:-1]):
        assert store.resolve_token(engine, malformed, secret) is None, malformed
    unknown_uid = "0" * 32
    assert store.resolve_token(engine, store.token(unknown_uid, ada.email, secret), secret) is None


def test_resolve_token_with_non_ascii_mac_is_none(engine, ada):
    assert store.resolve_token(engine, f"{ada.uid}.{'é' * 40}", "s3cret") is None


def test_state_secret_is_created_once_per_database(engine, tmp_path):
    first = store.state_secret(engine)
    assert len(first) >= 32
    assert store.state_secret(engine) == first

    other_root = tmp_path / "other"
    other_root.mkdir()
    shutil.copy(Path(__file__).resolve().parent.parent / "config.yaml", other_root / "config.yaml")
    other = engine_for(load_config(other_root / "config.yaml"))
    assert other.url != engine.url
    assert store.state_secret(other) != first
    assert store.state_secret(engine) == first


# -- the command line ---------------------------------------------------------------------------

@pytest.fixture
def cli(project, run_cli):
    cfg = project / "config.yaml"

    def run(*args):
        return run_cli("--config", cfg, "subscribers", *args)

    return run


def _listed(cli) -> list[dict]:
    """`subscribers list --json`, with the fields these tests compare (not the consent record)."""
    result = cli("list", "--json")
    assert result.returncode == 0, result.stderr
    return [{k: row[k] for k in ("email", "name", "tags", "status")} for row in json.loads(result.stdout)]


def test_cli_import_good_file(cli, tmp_path):
    path = _csv(tmp_path, "email,name,tags\nada@example.com,Ada,x\nbob@example.com,Bob,\n")
    result = cli("import", path)
    assert result.returncode == 0, result.stderr
    assert ("2 added, 0 updated, 0 unchanged, 0 resubscribed, 0 kept unsubscribed (or bounced, "
            "complained), 0 kept suppressed, 0 rejected") in result.stdout
    assert "error" not in result.stderr
    again = cli("import", path)
    assert again.returncode == 0, again.stderr
    assert ("0 added, 0 updated, 2 unchanged, 0 resubscribed, 0 kept unsubscribed (or bounced, "
            "complained), 0 kept suppressed, 0 rejected") in again.stdout
    assert [r["email"] for r in _listed(cli)] == ["ada@example.com", "bob@example.com"]


def test_cli_import_bad_rows_exit_1_with_file_line(cli, tmp_path):
    path = _csv(tmp_path, "email,name\n"
                          "ada@example.com,Ada\n"
                          "not-an-address,X\n"
                          "bob@example.com,\"Bob\nBuilder\"\n"
                          "x@localhost,Y\n", name="list.csv")
    result = cli("import", path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert ("2 added, 0 updated, 0 unchanged, 0 resubscribed, 0 kept unsubscribed (or bounced, "
            "complained), 0 kept suppressed, 2 rejected") in result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2
    assert errors[0].startswith(f"error: {path}:3: not-an-address: ")
    assert errors[1].startswith(f"error: {path}:6: x@localhost: ")
    assert [r["email"] for r in _listed(cli)] == ["ada@example.com", "bob@example.com"]


def test_cli_import_reports_addresses_with_brackets_verbatim(cli, tmp_path):
    path = _csv(tmp_path, "email,name\n[b]bad,X\n[/x]bad,Y\nada@example.com,Ada\n", name="brackets.csv")
    result = cli("import", path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors[0].startswith(f"error: {path}:2: [b]bad: ")
    assert errors[1].startswith(f"error: {path}:3: [/x]bad: ")


def test_cli_import_non_utf8_is_one_line_error(cli, tmp_path):
    path = _csv(tmp_path, "email,name\nzoe@example.com,Zoë\n", name="latin1.csv", encoding="latin-1")
    result = cli("import", path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: ")
    assert "latin1.csv" in lines[0]
    assert "UTF-8" in lines[0]


def test_cli_import_without_email_column(cli, tmp_path):
    path = _csv(tmp_path, "name\nAda\n", name="nomail.csv")
    result = cli("import", path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: {path}: line 1: no `email` column (columns: email, name, tags)"]


def test_cli_add(cli):
    result = cli("add", "Ada@Example.COM", "--name", "Ada Lovelace", "--tag", "news", "--tag", "vip")
    assert result.returncode == 0, result.stderr
    assert "added" in result.stdout
    assert _listed(cli) == [{"email": "Ada@example.com", "name": "Ada Lovelace", "tags": ["news", "vip"],
                             "status": "active"}]


def test_cli_add_bad_address_is_one_line_error(cli):
    result = cli("add", "bad-address")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: bad-address: ")
    assert _listed(cli) == []


def test_cli_remove_then_forget(cli):
    assert cli("add", "ada@example.com", "--name", "Ada").returncode == 0
    assert cli("add", "bob@example.com").returncode == 0

    removed = cli("remove", "ada@example.com")
    assert removed.returncode == 0, removed.stderr
    assert "unsubscribed" in removed.stdout
    assert {r["email"]: r["status"] for r in _listed(cli)} == {
        "ada@example.com": "unsubscribed", "bob@example.com": "active"}

    forgotten = cli("remove", "--forget", "ada@example.com")
    assert forgotten.returncode == 0, forgotten.stderr
    assert "forgotten" in forgotten.stdout
    assert [r["email"] for r in _listed(cli)] == ["bob@example.com"]


def test_cli_remove_unknown_exits_1(cli):
    assert cli("add", "bob@example.com").returncode == 0
    result = cli("remove", "nobody@example.com")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == ["error: nobody@example.com: not a subscriber"]
    assert [r["email"] for r in _listed(cli)] == ["bob@example.com"]


def test_cli_export(cli, tmp_path):
    assert cli("add", "ada@example.com", "--name", "Ada", "--tag", "x").returncode == 0
    assert cli("add", "bob@example.com").returncode == 0
    assert cli("remove", "bob@example.com").returncode == 0
    out = tmp_path / "export.csv"
    result = cli("export", out)
    assert result.returncode == 0, result.stderr
    assert "2 subscriber(s) written" in result.stderr
    rows = list(csv.reader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert rows[0] == ["email", "name", "tags", "status", "subscribed_at", "consent_at", "consent_source",
                       "status_reason"]
    assert [r[:4] for r in rows[1:]] == [["ada@example.com", "Ada", "x", "active"],
                                         ["bob@example.com", "", "", "unsubscribed"]]


def test_cli_list_table(cli):
    assert cli("add", "ada@example.com", "--name", "Ada").returncode == 0
    assert cli("add", "bob@example.com", "--tag", "vip").returncode == 0
    result = cli("list")
    assert result.returncode == 0, result.stderr
    for word in ("email", "status", "ada@example.com", "bob@example.com", "Ada", "vip", "active"):
        assert word in result.stdout
    with pytest.raises(json.JSONDecodeError):
        json.loads(result.stdout)
