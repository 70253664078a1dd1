"""The preview page's /calendar in Chromium: a week with a queue, a digest, a `publish_at` post and
a past send, in the right day and hour across the end of daylight-saving time in New York (Sun
2026-11-01), the month view, and the links to post pages. The project and its server are
tests/test_calendar.py's."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import SEED_SLUG
from tests.test_calendar import EXTRA, INFUSION, planned, served  # noqa: F401 - fixtures used below


def _cell(page: Page, uid: str) -> dict[str, str]:
    """The day and hour of the cell that holds a send, and the send's time as shown."""
    return page.eval_on_selector(f'[data-uid="{uid}"]', """e => ({
        date: e.closest('td').dataset.date, hour: e.closest('td').dataset.hour || '',
        time: e.dataset.time, zone: e.dataset.zone, link: e.getAttribute('href') || ''})""")


@pytest.mark.browser
def test_week_and_month_views_across_the_dst_change(page, served):  # noqa: F811 - the fixture
    page.goto(served + "/")
    page.click("#nav-calendar")
    expect(page.locator("#calendar")).to_have_attribute("data-view", "week")
    expect(page.locator("#cal-title")).to_have_text("Week of Mon 26 Oct 2026")
    host = "@www.rtrwellnesscenter.com"
    assert _cell(page, f"slots:outbox:20261030T143000Z{host}") == {
        "date": "2026-10-30", "hour": "10", "time": "10:30", "zone": "EDT", "link": f"/posts/{INFUSION}"}
    # Sunday, after the clocks went back: the slot is still at 10:30, now EST; the post that was
    # to take it goes out earlier by its `publish_at`, so it is a slot with nothing known yet.
    assert _cell(page, f"slots:outbox:20261101T153000Z{host}") == {
        "date": "2026-11-01", "hour": "10", "time": "10:30", "zone": "EST", "link": ""}
    expect(page.locator(f'[data-uid="slots:outbox:20261101T153000Z{host}"]')).to_contain_text("queue slot")
    assert _cell(page, f"sunday-digest:outbox:20261101T140000Z{host}") == {
        "date": "2026-11-01", "hour": "9", "time": "09:00", "zone": "EST",
        "link": "/digests/sunday-digest/outbox"}
    assert _cell(page, f"publish_at:outbox:{EXTRA}:{host}") == {
        "date": "2026-11-01", "hour": "8", "time": "08:00", "zone": "EST", "link": f"/posts/{EXTRA}"}
    assert _cell(page, f"sent:outbox:{SEED_SLUG}:{host}") == {
        "date": "2026-10-27", "hour": "9", "time": "09:00", "zone": "EDT", "link": f"/posts/{SEED_SLUG}"}
    expect(page.locator(f'[data-uid="sent:outbox:{SEED_SLUG}:{host}"]')).to_contain_text("3 sent")
    expect(page.locator(f'[data-uid="sunday-digest:outbox:20261101T140000Z{host}"]')).to_contain_text(
        "Autumn notes")

    page.click("#cal-next")
    expect(page.locator("#cal-title")).to_have_text("Week of Mon 02 Nov 2026")
    assert _cell(page, f"slots:outbox:20261102T153000Z{host}")["time"] == "10:30"
    page.click("#cal-previous")
    page.click("#cal-other")
    expect(page.locator("#calendar")).to_have_attribute("data-view", "month")
    expect(page.locator("#cal-title")).to_have_text("October 2026")
    assert _cell(page, f"slots:outbox:20261031T143000Z{host}")["date"] == "2026-10-31"
    expect(page.locator('td[data-date="2026-11-01"] [data-kind="digest"]')).to_have_count(1)
    expect(page.locator('td[data-date="2026-10-01"]')).to_have_count(1)
    page.click("#cal-next")
    expect(page.locator("#cal-title")).to_have_text("November 2026")
    page.click(f'[data-uid="publish_at:outbox:{EXTRA}:{host}"]')
    expect(page.locator("#title")).to_have_text("Autumn notes")


