"""engine/web/console/patients.js in a real Chromium: find a person, then all the record holds of them."""

from __future__ import annotations

import pytest_twisted

from engine.record.ingest import RecordIngestor
from engine.web.audit import Auditor
from engine.web.patients import patient_resources
from tests.fakes.browser import console_page, log_in, needs_chromium, playwright_api
from tests.fakes.harness import in_thread
from tests.fakes.record import Feeder, feed_journey
from tests.fakes.web import audit_rows, console_resources

pytestmark = needs_chromium


def _find(sync_api, url: str) -> dict:
    """Open the patients page, find by name and birth date, open the person; what the page showed."""
    seen: dict = {"problems": []}
    expect = sync_api.expect
    # Without the record's worklist route the page asks for it once and is told 404: not a problem.
    with console_page(sync_api, url, seen["problems"], allowed=("/api/record/worklist",)) as page:
        log_in(page)
        page.wait_for_selector("#app-view", state="visible")
        page.click("#nav button[data-page=patients]")
        expect(page.locator("#patients")).to_be_visible()
        seen["messages_hidden"] = page.is_hidden("#search")
        page.fill("#patient-form input[name=name]", "garc")
        page.fill("#patient-form input[name=birthdate]", "1980-05-17")
        page.click("#patient-submit")
        rows = page.locator("#patient-results tbody tr")
        expect(rows).to_have_count(1)
        seen["row"] = rows.first.locator("td").all_inner_texts()
        rows.first.click()
        expect(page.locator("#person")).to_be_visible()
        seen["title"] = page.text_content("#person-title")
        sections = page.locator("#person-sections .person-section")
        seen["sections"] = [s.get_attribute("data-section") for s in sections.all()]
        seen["headings"] = page.locator("#person-sections h3").all_inner_texts()
        seen["identifiers"] = page.locator("[data-section=identifiers] table").inner_text()
        seen["worklist_shown"] = page.is_visible("#worklist")
    return seen


@pytest_twisted.inlineCallbacks
def test_the_patient_view_finds_a_person_and_shows_their_record(start_web, store):
    """Found by name and birth date, one person shows identifiers with systems, visits, results, history."""
    sync_api = playwright_api()
    engine = store.repository.engine
    feed_journey(Feeder(engine, RecordIngestor(engine)))
    web = start_web(
        extra_resources={**console_resources(store), **patient_resources(store, auditor=Auditor(store))}
    )

    seen = yield in_thread(_find, sync_api, web.url + "/")

    assert seen["problems"] == []
    assert seen["messages_hidden"] is True
    assert seen["row"][0] == "1" and seen["row"][2] == "1980-05-17"
    assert seen["title"].endswith("(1)")
    assert seen["sections"][:2] == ["identifiers", "names"] and seen["sections"][-1] == "history"
    counts = dict(heading.rsplit(" (", 1) for heading in seen["headings"])
    assert int(counts["Identifiers"].rstrip(")")) >= 2
    assert int(counts["Visits"].rstrip(")")) >= 1
    assert int(counts["History"].rstrip(")")) >= 1
    assert "MRN-556677" in seen["identifiers"] and "STMARY_EMR" in seen["identifiers"]
    assert seen["worklist_shown"] is False
    actions = [row[1] for row in audit_rows(store)]
    assert actions[:2] == ["login", "patient.search"]
    assert sorted(actions[2:]) == ["patient.history", "patient.view"]  # read together
