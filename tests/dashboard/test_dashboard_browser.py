"""The dashboard in a real browser: headless Chromium (Debian's ``chromium``) driven by Playwright.

A real gateway (in-process uvicorn on a free port, the fake provider behind it, learning by the
offline heuristic extractor) serves the page; each test signs in as a user would and does one
thing a user does: find a subject and see a memory learned from a chat, restore a superseded
memory, edit a memory policy and watch the resolve preview change, erase a subject, watch live
events, retry a failing job now, list a subject's state keys and open one. A read-only key sees
no button that would change anything, and the server refuses its writes anyway. A memory whose
text is HTML stays text. Every page is screenshotted (at desktop and at phone width, 375 px)
into ``$MNX_TEST_ARTIFACTS/dashboard`` (default /tmp/mnx-dashboard-artifacts/dashboard), and
every test fails on any console error or uncaught exception of the page.

Needs Playwright (``pip install playwright==1.65.2``; its own browsers are not used) and
``/usr/bin/chromium`` (``apt-get install -y chromium``). Without them the tests are skipped,
saying which is missing, except when ``CI=true``: then they fail.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import KEY, PROVIDER_KEY, wait_until

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("MNX_TEST_ARTIFACTS", "/tmp/mnx-dashboard-artifacts")) / "dashboard"
READ_ONLY_KEY = "mnx_live_dashboard_browser_read_only"
PROJECTS = [
    {"id": "project-a", "keys": [{"name": "operator", "key": KEY, "scopes": ["*"]},
                                 {"name": "viewer", "key": READ_ONLY_KEY, "scopes": ["read"]}]},
]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 375, "height": 812}


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed: .venv/bin/pip install playwright==1.65.2"
    if not os.path.exists(CHROMIUM):
        return f"no Chromium at {CHROMIUM}: apt-get install -y chromium"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    missing = _missing()
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the dashboard's browser tests must run in CI: {missing}")
        pytest.skip(f"dashboard browser tests skipped: {missing}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # --no-sandbox: CI and this machine run the tests as root, where Chromium's sandbox cannot start.
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def gateway(module_gateway):
    return module_gateway(projects=PROJECTS)


class Page:
    """A browser tab on the dashboard, collecting the console errors and uncaught exceptions."""

    def __init__(self, browser: Any, gateway: Any, viewport: dict[str, int]) -> None:
        self.context = browser.new_context(viewport=viewport, accept_downloads=True)
        self.tab = self.context.new_page()
        self.gateway = gateway
        self.errors: list[str] = []
        self.tab.on("console", lambda m: self.errors.append(f"console: {m.text}") if m.type == "error" else None)
        self.tab.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
        # Which request failed (the console says only "Failed to load resource").
        self.tab.on("response", lambda r: self.errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        self.tab.set_default_timeout(10_000)

    def sign_in(self, key: str = KEY) -> None:
        self.tab.goto(self.gateway.url + "/dashboard")
        self.tab.get_by_label("Project key").fill(key)
        self.tab.get_by_role("button", name="Sign in").click()
        self.expect(self.tab.get_by_role("heading", name="Subjects", exact=True)).to_be_visible()

    def go(self, hash_route: str) -> None:
        self.tab.evaluate("route => { location.hash = route; }", hash_route)

    @staticmethod
    def expect(locator: Any) -> Any:
        from playwright.sync_api import expect
        return expect(locator)

    def screenshot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.tab.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    def fits_the_width(self) -> bool:
        """Nothing sticks out sideways (a wide table scrolls inside its own box)."""
        return self.tab.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


@pytest.fixture
def page(browser, gateway) -> Iterator[Page]:
    opened = Page(browser, gateway, DESKTOP)
    yield opened
    opened.context.close()
    assert opened.errors == [], f"the page logged errors: {opened.errors}"


@pytest.fixture
def phone(browser, gateway) -> Iterator[Page]:
    opened = Page(browser, gateway, PHONE)
    yield opened
    opened.context.close()
    assert opened.errors == [], f"the page logged errors: {opened.errors}"


def fresh(label: str) -> str:
    return f"{label}-{secrets.token_hex(3)}"


def chat_turn(gateway: Any, subject: str, chat_id: str, text: str) -> None:
    response = httpx.post(gateway.url + "/v1/chat/completions", timeout=30, headers={
        "x-mnexium-key": KEY, "x-openai-key": PROVIDER_KEY}, json={
        "model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}],
        "mnx": {"subject_id": subject, "chat_id": chat_id, "learn": True, "history": False}})
    assert response.status_code == 200, response.text


def memories(gateway: Any, subject: str, **params: Any) -> list[dict[str, Any]]:
    with gateway.rest() as rest:
        return rest.get("/memories", params={"subject_id": subject, **params}).json()["data"]


def remember(gateway: Any, subject: str, text: str) -> dict[str, Any]:
    with gateway.rest() as rest:
        response = rest.post("/memories", json={"subject_id": subject, "text": text})
    assert response.status_code == 201, response.text
    return response.json()


# -- the tests --------------------------------------------------------------------------------

def test_sign_in_find_a_subject_and_see_what_it_learned_from_a_chat(page, gateway):
    subject = fresh("learner")
    chat_turn(gateway, subject, "first-chat", "My favorite color is blue")
    assert wait_until(lambda: memories(gateway, subject), timeout=15), "the learn job stored nothing"
    [learned] = memories(gateway, subject)

    page.sign_in()
    page.tab.get_by_label("Find a subject (part of its id)").fill(subject[:-2].upper())
    page.tab.get_by_role("button", name="Search", exact=True).click()
    page.expect(page.tab.get_by_role("link", name=subject)).to_be_visible()
    page.screenshot("01-subjects")
    page.tab.get_by_role("link", name=subject).click()
    page.expect(page.tab.get_by_role("heading", name=f"Subject {subject}")).to_be_visible()
    row = page.tab.get_by_role("row").filter(has_text=learned["text"])
    page.expect(row).to_be_visible()
    page.expect(row).to_contain_text(learned["kind"])
    page.screenshot("02-subject-memories")

    for tab, name in [("Profile", "03-subject-profile"), ("Claims", "04-subject-claims"),
                      ("State", "05-subject-state"), ("Records", "06-subject-records")]:
        page.tab.get_by_role("link", name=tab, exact=True).click()
        page.expect(page.tab.get_by_role("link", name=tab, exact=True)).to_have_attribute("aria-current", "page")
        page.screenshot(name)
    page.tab.get_by_role("link", name="Chats", exact=True).click()
    page.tab.get_by_role("link", name="first-chat").click()
    page.expect(page.tab.get_by_role("heading", name="Chat first-chat")).to_be_visible()
    page.expect(page.tab.get_by_role("cell", name="My favorite color is blue", exact=True)).to_be_visible()
    page.screenshot("07-chat")


def test_restore_a_superseded_memory_from_its_timeline(page, gateway):
    subject = fresh("changer")
    old = remember(gateway, subject, "User's favorite drink is tea")
    remember(gateway, subject, "User's favorite drink is coffee")
    assert [m["text"] for m in memories(gateway, subject)] == ["User's favorite drink is coffee"]

    page.sign_in()
    page.go(f"#/subject/{subject}/history")
    timeline = page.tab.locator(".timeline")
    page.expect(timeline.first).to_contain_text("User's favorite drink is tea")
    page.screenshot("08-subject-superseded")
    page.tab.get_by_role("button", name="Restore: User's favorite drink is tea").click()
    page.expect(page.tab.get_by_role("status")).to_have_text("Memory restored.")
    assert wait_until(lambda: old["id"] in [m["id"] for m in memories(gateway, subject)])


def test_edit_a_policy_and_see_the_resolve_preview_change(page, gateway):
    subject = fresh("policy-subject")
    with gateway.rest() as rest:
        created = rest.post("/memory/policies", json={"name": fresh("food"), "policy_text": "Keep only food facts.",
                                                      "scope": "subject", "scope_id": subject, "is_default": True})
        assert created.status_code == 201, created.text
        name = created.json()["policy"]["name"]

    page.sign_in()
    page.tab.get_by_role("link", name="Memory policies").click()
    page.tab.get_by_label("Subject id (optional)").fill(subject)
    page.tab.get_by_role("button", name="Preview").click()
    preview = page.tab.get_by_test_id("resolved-text")
    page.expect(preview).to_contain_text("Keep only food facts.")
    page.tab.get_by_role("button", name=f"Edit policy {name}").click()
    page.tab.get_by_role("form", name=f"Edit policy {name}").get_by_label("Text").fill("Keep only travel plans.")
    page.screenshot("09-policy-edit")
    page.tab.get_by_role("button", name="Save").click()
    page.expect(page.tab.get_by_role("status")).to_have_text(f"Saved policy {name}.")
    # The page comes back with the same subject in the preview, now resolving to the new text.
    page.tab.get_by_role("button", name="Preview").click()
    page.expect(preview).to_contain_text("Keep only travel plans.")
    page.expect(preview).not_to_contain_text("food")
    page.screenshot("10-policies")
    page.tab.get_by_role("link", name="Prompts").click()
    page.expect(page.tab.get_by_role("heading", name="System prompts", exact=True)).to_be_visible()
    page.screenshot("11-prompts")


def test_erase_a_subject_after_typing_its_id(page, gateway):
    subject = fresh("leaver")
    remember(gateway, subject, "User lives in Lisbon")
    chat_turn(gateway, subject, "bye-chat", "hello")

    page.sign_in()
    page.go(f"#/subject/{subject}/memories")
    page.expect(page.tab.get_by_text("User lives in Lisbon")).to_be_visible()
    # First its export, after a confirmation: the JSONL file the REST API makes.
    page.tab.get_by_role("button", name="Export (JSONL)").click()
    with page.tab.expect_download() as download:
        page.tab.get_by_role("dialog").get_by_role("button", name="Export").click()
    lines = [json.loads(line) for line in Path(download.value.path()).read_text().splitlines()]
    assert download.value.suggested_filename == f"subject-{subject}.jsonl"
    assert lines[0]["kind"] == "header" and lines[-1]["kind"] == "end"
    assert any(line["kind"] == "memories" and line["data"]["text"] == "User lives in Lisbon" for line in lines)
    page.tab.get_by_role("button", name="Erase subject…").click()
    dialog = page.tab.get_by_role("dialog")
    confirm = dialog.get_by_role("button", name="Erase")
    page.expect(confirm).to_be_disabled()
    dialog.get_by_label(f"Type {subject} to confirm").fill(subject)
    page.screenshot("12-erase-confirmation")
    confirm.click()
    page.expect(page.tab.get_by_role("status")).to_contain_text("Subject erased")
    page.expect(page.tab.get_by_role("heading", name="Subjects", exact=True)).to_be_visible()
    assert memories(gateway, subject, include_superseded="true", include_deleted="true") == []
    with gateway.rest() as rest:
        assert rest.get("/chat/history/list", params={"subject_id": subject}).json()["chats"] == []


def test_cancelling_the_erasure_keeps_the_subject(page, gateway):
    subject = fresh("stayer")
    remember(gateway, subject, "User keeps bees")
    page.sign_in()
    page.go(f"#/subject/{subject}/memories")
    page.tab.get_by_role("button", name="Erase subject…").click()
    page.tab.keyboard.press("Escape")
    page.expect(page.tab.get_by_role("dialog")).to_be_hidden()
    assert [m["text"] for m in memories(gateway, subject)] == ["User keeps bees"]


def test_a_read_only_key_sees_no_edit_buttons_and_its_writes_are_refused(page, gateway):
    subject = fresh("viewed")
    remember(gateway, subject, "User's favorite sport is tennis")
    remember(gateway, subject, "User's favorite sport is golf")
    with gateway.rest() as rest:
        policy = rest.post("/memory/policies", json={"name": fresh("ro"), "policy_text": "Keep sports."}).json()

    page.sign_in(READ_ONLY_KEY)
    page.expect(page.tab.locator("#who")).to_have_text("project-a · viewer")
    page.go(f"#/subject/{subject}/memories")
    page.expect(page.tab.get_by_text("User's favorite sport is golf")).to_be_visible()
    page.screenshot("13-read-only-subject")
    page.go(f"#/subject/{subject}/history")
    page.expect(page.tab.locator(".timeline").first).to_contain_text("tennis")
    page.go("#/policies")
    page.expect(page.tab.get_by_text("Keep sports.").first).to_be_visible()
    page.screenshot("14-read-only-policies")
    for button in ("Erase subject…", "Delete", "Edit", "Restore", "Create"):
        assert page.tab.get_by_role("button", name=re.compile(button)).count() == 0, f"a read-only key sees {button}"
    page.go(f"#/subject/{subject}/history")
    page.expect(page.tab.locator(".timeline").first).to_be_visible()
    assert page.tab.get_by_role("button", name=re.compile("Restore")).count() == 0

    # The server refuses what the page does not offer, whoever sends it.
    with gateway.rest(READ_ONLY_KEY) as rest:
        refused = [rest.patch(f"/memory/policies/{policy['id']}", json={"policy_text": "Changed"}),
                   rest.delete(f"/subjects/{subject}"),
                   rest.post(f"/memories/{memories(gateway, subject)[0]['id']}/restore")]
    assert [r.status_code for r in refused] == [403, 403, 403]
    assert [r.json()["error"] for r in refused] == ["forbidden"] * 3
    assert [m["text"] for m in memories(gateway, subject)] == ["User's favorite sport is golf"]


def test_a_memory_written_as_html_is_shown_as_text(page, gateway):
    subject = fresh("hostile")
    hostile = ('<img src=x onerror="window.__owned=1"><script>window.__owned=2</script>'
               '<b id="injected">bold</b>')
    remember(gateway, subject, hostile)
    page.sign_in()
    page.go(f"#/subject/{subject}/memories")
    page.expect(page.tab.get_by_text(hostile)).to_be_visible()
    page.screenshot("15-hostile-text")
    assert page.tab.evaluate("window.__owned") is None
    assert page.tab.locator("#view img, #view script, #injected").count() == 0


def test_memory_search_shows_the_scores_recall_ranks_by(page, gateway):
    subject = fresh("searcher")
    remember(gateway, subject, "User plays the violin every evening")
    remember(gateway, subject, "User owns a red bicycle")
    page.sign_in()
    page.tab.get_by_role("link", name="Memory search").click()
    page.tab.get_by_label("Subject id").fill(subject)
    page.tab.get_by_label("Query").fill("violin")
    page.tab.get_by_role("button", name="Search", exact=True).click()
    row = page.tab.get_by_role("row").filter(has_text="violin")
    page.expect(row).to_be_visible()
    page.expect(page.tab.get_by_role("columnheader", name="Effective score")).to_be_attached()
    # The best hit's relevance is 1: its effective score is its weight.
    page.expect(row.get_by_role("cell").nth(3)).to_have_text("1.000")
    page.expect(row).to_contain_text("importance 0.500")
    page.screenshot("16-memory-search")


def test_jobs_and_live_events(page, gateway):
    subject = fresh("live")
    page.sign_in()
    page.tab.get_by_role("link", name="Jobs").click()
    page.expect(page.tab.get_by_text("Unfinished jobs (queue depth)")).to_be_visible()
    page.screenshot("17-jobs")
    page.tab.get_by_role("link", name="Live events").click()
    page.tab.get_by_label("Only this subject (optional)").fill(subject)
    page.tab.get_by_role("button", name="Connect").click()
    page.expect(page.tab.get_by_text("Connected.")).to_be_visible()
    remember(gateway, subject, "User just adopted a cat")
    page.expect(page.tab.locator(".events li").first).to_contain_text("memory.created")
    page.expect(page.tab.locator(".events li").first).to_contain_text("User just adopted a cat")
    page.screenshot("18-live-events")
    page.tab.get_by_role("button", name="Disconnect").click()
    page.expect(page.tab.get_by_text("Not connected.")).to_be_visible()


def test_retry_now_runs_a_failing_job_again_and_a_read_only_key_is_not_offered_it(browser, start_gateway,
                                                                                   storage_sqlite):
    # A gateway of its own whose extractions all fail, each failed job waiting an hour for its next run.
    failing = start_gateway(storage_sqlite, projects=PROJECTS, learning={
        "extractor": {"provider": "litellm", "model": "fail-400"}, "retry_base_seconds": 3600, "poll_seconds": 0.2})
    subject = fresh("retried")
    chat_turn(failing, subject, "retry-chat", "My favorite color is green")

    def jobs() -> list[dict[str, Any]]:
        with failing.rest() as rest:
            return rest.get("/jobs").json()["data"]
    assert wait_until(lambda: [j["status"] for j in jobs()] == ["failed"], timeout=20), jobs()
    [job] = jobs()
    assert job["attempts"] == 1

    viewer = Page(browser, failing, DESKTOP)
    try:
        viewer.sign_in(READ_ONLY_KEY)
        viewer.go("#/jobs")
        viewer.expect(viewer.tab.get_by_role("cell", name=job["id"])).to_be_visible()
        assert viewer.tab.get_by_role("button", name=re.compile("Retry")).count() == 0
    finally:
        viewer.context.close()
    assert viewer.errors == [], viewer.errors

    page = Page(browser, failing, DESKTOP)
    try:
        page.sign_in()
        page.go("#/jobs")
        row = page.tab.get_by_role("row").filter(has_text=job["id"])
        page.expect(row.get_by_role("cell").nth(3)).to_have_text("1")
        page.screenshot("17b-jobs-failing")
        row.get_by_role("button", name=f"Retry job {job['id']} now").click()
        page.expect(page.tab.get_by_role("status")).to_have_text(f"Job {job['id']} ran again (attempt 2).")
        page.expect(row.get_by_role("cell").nth(3)).to_have_text("2")
        page.screenshot("17c-jobs-retried")
    finally:
        page.context.close()
    assert page.errors == [], page.errors
    assert [j["attempts"] for j in jobs()] == [2]


def test_a_subjects_state_keys_are_listed_and_a_value_shown_on_click(page, gateway):
    subject = fresh("stateful")
    with gateway.rest() as rest:
        for key, value, ttl in [("plan", {"step": 2, "goal": "book a flight"}, None),
                                ("agent/scratch", "thinking about Lisbon", 3600)]:
            body = {"value": value, **({"ttl_seconds": ttl} if ttl else {})}
            response = rest.put(f"/state/{key}", headers={"x-subject-id": subject}, json=body)
            assert response.status_code == 200, response.text

    page.sign_in()
    page.go(f"#/subject/{subject}/state")
    buttons = page.tab.get_by_role("button", name=re.compile("^Show state "))
    page.expect(buttons).to_have_text(["agent/scratch", "plan"])  # sorted by key
    page.expect(page.tab.get_by_role("row").filter(has_text="plan")).to_contain_text("never")
    assert page.tab.get_by_text("book a flight").count() == 0  # values only on demand
    page.tab.get_by_role("button", name="Show state plan").click()
    page.expect(page.tab.locator("#view pre")).to_contain_text('"goal": "book a flight"')
    page.tab.get_by_role("button", name="Show state agent/scratch").click()
    page.expect(page.tab.locator("#view pre")).to_have_text("thinking about Lisbon")
    page.screenshot("05b-subject-state-value")


def test_signing_in_and_moving_around_by_keyboard(page, gateway):
    page.tab.goto(gateway.url + "/dashboard")
    page.expect(page.tab.get_by_label("Project key")).to_be_focused()
    page.tab.keyboard.type(KEY)
    page.tab.keyboard.press("Enter")
    heading = page.tab.get_by_role("heading", name="Subjects", exact=True)
    page.expect(heading).to_be_focused()
    # Every control reached by Tab shows where the focus is.
    page.tab.keyboard.press("Tab")
    outline = page.tab.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"
    # A wrong key is told so, and the key is never kept in the page's storage beyond this tab.
    page.tab.get_by_role("button", name="Sign out").click()
    page.expect(page.tab.get_by_label("Project key")).to_be_focused()
    assert page.tab.evaluate("sessionStorage.length + localStorage.length") == 0


def test_every_page_fits_a_phone(phone, gateway):
    subject = fresh("phone")
    remember(gateway, subject, "User's favorite city is Porto")
    remember(gateway, subject, "User's favorite city is Kyoto and they would like to live there for a while")
    chat_turn(gateway, subject, "phone-chat", "I love long walks by the sea")
    phone.sign_in()
    for route, name in [("#/subjects", "subjects"), (f"#/subject/{subject}/memories", "subject"),
                        (f"#/subject/{subject}/history", "superseded"), (f"#/subject/{subject}/chats", "chats"),
                        (f"#/chat/{subject}/phone-chat", "chat"), (f"#/search?subject_id={subject}&q=city", "search"),
                        ("#/prompts", "prompts"), ("#/policies", "policies"), ("#/jobs", "jobs"),
                        ("#/events", "events")]:
        phone.go(route)
        phone.expect(phone.tab.locator("#view h1")).to_be_focused()
        phone.tab.wait_for_load_state("networkidle")
        phone.screenshot(f"phone-{name}")
        assert phone.fits_the_width(), f"{route} is wider than a 375 px phone"
