"""The web console in a real browser: Debian's chromium, driven by Playwright.

A real uvicorn server on a free port runs ``create_app`` with a graph that parks for a
person's approval. The test starts runs through the API and works the console as a person
would: the run list shows a run live, its page shows it parked on the graph and in the
journal, the approvals inbox approves it, and the run page, open all along in another tab,
sees it finish without a reload. Cancel, fork at a step, approve-with-edits, reject with a
reason and replay are clicked too. Screenshots are saved under the test's tmp dir (the path
is printed: ``pytest -s`` shows it).

Chromium missing: skipped with the reason, or a failure with MAINSPRING_REQUIRE_SERVICES=1
(``.ci/run`` installs the ``chromium`` package).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp

from mainspring.server import create_app
from mainspring.server.config import ServerConfig
from tests.cli_graphs import pair
from tests.conftest import service_missing
from tests.console_graphs import STORY, chat, mail, models
from tests.server_harness import serving as harness_serving

pytestmark = pytest.mark.anyio

#: Generous bounds for a loaded 2-core CI machine; they bound waits, they time nothing.
WAIT_MS = 15_000


def chromium_path() -> str:
    """Debian's chromium (``apt-get install chromium``), or MAINSPRING_CHROMIUM."""
    path = os.environ.get("MAINSPRING_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        service_missing(
            f"no chromium at {path}: the console's browser test needs Debian's chromium "
            "package (apt-get install chromium; .ci/run installs it)"
        )
    try:
        import playwright.async_api  # noqa: F401
    except ImportError as exc:
        service_missing(
            f"the console's browser test needs playwright (pip install playwright): {exc}"
        )
    return path


def serving(app: ASGIApp) -> contextlib.AbstractAsyncContextManager[str]:
    """The app served for the block (``tests/server_harness.py``), its streams given 2 s."""
    return harness_serving(app, graceful=2)


class Shots:
    """Numbered screenshots in one directory."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "screenshots"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.n = 0
        print(f"\nconsole screenshots: {self.dir}")

    async def take(self, page: Any, name: str) -> None:
        self.n += 1
        await page.screenshot(path=str(self.dir / f"{self.n:02d}-{name}.png"), full_page=True)


async def start_parked(client: httpx.AsyncClient, to: str) -> str:
    """Start a ``mail`` run through the API and wait until it parks for approval."""
    response = await client.post(
        "/v1/runs", json={"graph": "mail", "input": {"to": to}, "wait": True, "timeout": 30}
    )
    assert response.status_code in (200, 201), response.text
    run = response.json()
    assert run["status"] == "interrupted", run
    return str(run["run_id"])


async def test_console_park_approve_finish_cancel_fork(tmp_path: Path) -> None:
    executable = chromium_path()
    from playwright.async_api import async_playwright, expect

    expect.set_options(timeout=WAIT_MS)
    shots = Shots(tmp_path)
    errors: list[str] = []

    def note(error: str) -> None:
        print(f"browser: {error}")  # in the test's output at once, if a wait fails later
        errors.append(error)

    app = create_app(
        f"sqlite:///{tmp_path / 'console.db'}",
        graphs=[mail, pair],
        config=ServerConfig(auth=False),
        models=models(),
    )
    async with (
        serving(app) as base,
        httpx.AsyncClient(base_url=base, timeout=60) as client,
        async_playwright() as pw,
    ):
        browser = await pw.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 800})
            # A page error or a refused script (the Content-Security-Policy) fails the test.
            context.on("weberror", lambda e: note(f"page error: {e.error}"))
            watcher = await context.new_page()
            watcher.on(
                "console",
                lambda m: note(m.text) if "Content Security Policy" in m.text else None,
            )

            # -- a run parks; the list shows it, its page shows where it waits --
            first = await start_parked(client, "ann@example.com")
            await watcher.goto(f"{base}/#/runs")
            row = watcher.locator(f'tr[data-run-id="{first}"]')
            await expect(row).to_have_attribute("data-status", "interrupted")
            await shots.take(watcher, "runs-list-parked")

            await row.get_by_role("link", name=first).click()
            await expect(watcher.locator("main")).to_have_attribute("data-status", "interrupted")
            await expect(watcher.locator('g.node[data-node="review"]')).to_have_class(
                re.compile(r"\bparked\b")
            )
            await expect(watcher.locator("tr.ev-interrupted")).to_have_count(1)
            await expect(watcher.locator("#state-title")).to_contain_text("State at #")
            await expect(watcher.locator(".waterfall .span-row").first).to_be_visible()
            await shots.take(watcher, "run-parked")
            await watcher.evaluate("window.__notReloaded = true")

            # -- another tab approves it in the inbox --
            inbox = await context.new_page()
            await inbox.goto(f"{base}/#/approvals")
            card = inbox.locator(f'article.interrupt[data-run-id="{first}"]')
            await expect(card).to_contain_text("send this mail?")
            await expect(inbox.locator("#approvals-count")).to_have_text("1")
            await shots.take(inbox, "approvals-inbox")
            await card.get_by_role("button", name="Approve", exact=True).click()

            # -- the run page sees it finish, live: no reload --
            await watcher.bring_to_front()  # a tab in the back gets no animation frames
            await expect(watcher.locator("main")).to_have_attribute("data-status", "finished")
            await expect(watcher.locator("tr.ev-finished")).to_have_count(1)
            await expect(watcher.locator('g.node[data-node="__end__"]')).to_have_class(
                re.compile(r"\bdone\b")
            )
            await expect(watcher.locator(".state-body")).to_contain_text("sent to ann@example.com")
            await expect(watcher.locator(".usage")).to_contain_text("$0.000")  # the writer's
            assert await watcher.evaluate("window.__notReloaded") is True
            await shots.take(watcher, "run-finished-live")
            final = (await client.get(f"/v1/runs/{first}")).json()
            assert final["status"] == "finished"
            assert final["outcome"]["state"]["sent"] == "sent to ann@example.com"

            # -- replay: the code still decides as the journal says --
            await watcher.locator('[data-action="replay"]').click()
            await expect(watcher.locator('[data-replay="ok"]')).to_be_visible()

            # -- the list follows a new run live; cancel it from its page --
            await inbox.bring_to_front()
            await inbox.goto(f"{base}/#/runs")
            await expect(inbox.locator(f'tr[data-run-id="{first}"]')).to_have_attribute(
                "data-status", "finished"
            )
            cost_cell = inbox.locator(f'tr[data-run-id="{first}"] td').nth(9)
            await expect(cost_cell).to_contain_text("$0.000")
            second = await start_parked(client, "bob@example.com")
            row = inbox.locator(f'tr[data-run-id="{second}"]')
            await expect(row).to_have_attribute("data-status", "interrupted")
            await shots.take(inbox, "runs-list-live")
            await row.get_by_role("link", name=second).click()
            await inbox.locator('[data-action="cancel"]').click()
            await inbox.get_by_label("Cancel reason").fill("wrong customer")
            await inbox.locator('[data-action="confirm-cancel"]').click()
            await expect(inbox.locator("main")).to_have_attribute("data-status", "cancelled")
            await expect(inbox.locator("tr.ev-cancelled")).to_contain_text("wrong customer")
            await shots.take(inbox, "run-cancelled")

            # -- fork the finished run at its park: the fork parks there again; approve it
            # with edited arguments on its own page: an address that fails it, with a traceback
            await watcher.bring_to_front()
            parked_at = watcher.locator("tr.ev-interrupted")
            seq = await parked_at.get_attribute("data-seq")
            await parked_at.click()
            await expect(watcher.locator("#follow")).not_to_be_checked()
            await watcher.locator('[data-action="fork"]').click()
            await watcher.locator('[data-action="confirm-fork"]').click()
            await expect(watcher).not_to_have_url(f"{base}/#/runs/{first}")
            await expect(watcher.locator(".run-meta")).to_contain_text(f"forked from {first}")
            await expect(watcher.locator("main")).to_have_attribute("data-status", "interrupted")
            fork_id = watcher.url.rsplit("/", 1)[1]
            journal = (await client.get(f"/v1/runs/{fork_id}/events")).json()["events"]
            assert journal[0]["data"]["forked_from"]["run_id"] == first
            pending = watcher.locator("article.interrupt")
            await pending.get_by_text("Edit the arguments").click()
            await pending.locator("textarea").fill('{"to": "nobody", "body": "Hi"}')
            await shots.take(watcher, f"fork-at-{seq}-editing")
            await pending.get_by_role("button", name="Approve with edits").click()
            await expect(watcher.locator("main")).to_have_attribute("data-status", "failed")
            errors_panel = watcher.locator(".errors")
            await expect(errors_panel).to_contain_text("cannot send to 'nobody'")
            await expect(errors_panel.locator("pre.traceback").first).to_contain_text(
                "Traceback (most recent call last)"
            )
            await expect(watcher.locator('g.node[data-node="send"]')).to_have_class(
                re.compile(r"\bfailed\b")
            )
            await shots.take(watcher, "fork-failed-traceback")

            # -- the list's filters --
            await inbox.bring_to_front()
            await inbox.goto(f"{base}/#/runs")
            await inbox.get_by_label("Status").select_option("failed")
            await expect(inbox.locator("tr[data-run-id]")).to_have_count(1)
            await expect(inbox.locator(f'tr[data-run-id="{fork_id}"]')).to_be_visible()
            assert "status=failed" in inbox.url
            await inbox.locator(f'tr[data-run-id="{fork_id}"] a.filter-link').first.click()
            await expect(inbox).to_have_url(re.compile(r"status=failed&graph=mail"))
            await expect(inbox.get_by_label("Graph")).to_have_value("mail")
            await expect(inbox.locator("tr[data-run-id]")).to_have_count(1)
            await shots.take(inbox, "runs-filtered-failed")

            # -- reject with a reason, in the inbox --
            await inbox.bring_to_front()
            third = await start_parked(client, "dee@example.com")
            await inbox.goto(f"{base}/#/approvals")
            card = inbox.locator(f'article.interrupt[data-run-id="{third}"]')
            await card.get_by_label("Reason").fill("not this week")
            await card.get_by_role("button", name="Reject").click()
            gone = inbox.locator(f'article.interrupt[data-run-id="{third}"]')
            await expect(gone).to_have_count(0)
            await expect(inbox.locator("#approvals-list")).to_contain_text("Nothing is waiting")
            rejected = (await client.get(f"/v1/runs/{third}")).json()
            assert rejected["outcome"]["state"]["reason"] == "not this week"
            assert rejected["outcome"]["state"]["sent"] == "not sent"
            await shots.take(inbox, "approvals-empty")

            # -- Resume… with two interrupts pending: choose which one the value answers --
            response = await client.post(
                "/v1/runs", json={"graph": "pair", "input": {}, "wait": True, "timeout": 30}
            )
            both = response.json()
            assert both["status"] == "interrupted", both
            ids = sorted(i["interrupt_id"] for i in both["outcome"]["interrupts"])
            assert len(ids) == 2
            await inbox.goto(f"{base}/#/runs/{both['run_id']}")
            await expect(inbox.locator("main")).to_have_attribute("data-status", "interrupted")
            await inbox.locator('[data-action="resume"]').click()
            await inbox.locator("#resume-interrupt").select_option(ids[1])
            await inbox.get_by_label("Value (JSON) for that interrupt").fill('"yes"')
            await inbox.locator('[data-action="confirm-resume"]').click()
            await expect(inbox.locator("article.interrupt")).to_have_count(1)
            await expect(inbox.locator("article.interrupt")).to_have_attribute(
                "data-interrupt-id", ids[0]
            )
        finally:
            await browser.close()
    assert errors == []
    assert len(list(shots.dir.glob("*.png"))) == shots.n


async def test_console_with_api_keys(tmp_path: Path) -> None:
    """With auth on: the console asks for a key, keeps it in the tab, streams with it
    (EventSource passes it as ``?api_key=``), and shows only the key's tenant's runs."""
    executable = chromium_path()
    from playwright.async_api import async_playwright, expect

    from mainspring.server.keys import Scope
    from mainspring.server.keys.memory import MemoryKeyStore

    expect.set_options(timeout=WAIT_MS)
    shots = Shots(tmp_path)
    keys = MemoryKeyStore()
    _, acme_key = await keys.create("acme", frozenset({Scope.READ, Scope.RUN, Scope.APPROVE}))
    _, other_key = await keys.create("other", frozenset({Scope.READ, Scope.RUN}))
    app = create_app(
        f"sqlite:///{tmp_path / 'console.db'}", graphs=[mail], keys=keys, models=models()
    )
    async with (
        serving(app) as base,
        httpx.AsyncClient(
            base_url=base, timeout=60, headers={"Authorization": f"Bearer {acme_key}"}
        ) as acme,
        httpx.AsyncClient(
            base_url=base, timeout=60, headers={"Authorization": f"Bearer {other_key}"}
        ) as other,
        async_playwright() as pw,
    ):
        mine = await start_parked(acme, "ann@example.com")
        theirs = await start_parked(other, "zed@example.com")
        browser = await pw.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 800})
            # Before a key is entered the page makes no /v1 call (none could succeed): no
            # 401, no failed request, no error in the browser's console.
            troubles: list[str] = []
            api_calls: list[str] = []
            page.on("console", lambda m: troubles.append(m.text) if m.type == "error" else None)
            page.on("requestfailed", lambda r: troubles.append(f"failed {r.url}"))
            page.on(
                "response",
                lambda r: troubles.append(f"{r.status} {r.url}") if r.status == 401 else None,
            )
            page.on("request", lambda r: api_calls.append(r.url) if "/v1/" in r.url else None)
            await page.goto(f"{base}/#/runs")
            key_field = page.get_by_label("API key", exact=True)
            await expect(key_field).to_be_visible()
            await expect(page.locator("#live-mode")).to_have_text("")
            assert troubles == [] and api_calls == [], (troubles, api_calls)
            await key_field.fill("ms_nope_nope")
            await page.get_by_role("button", name="Open the console").click()
            await expect(page.get_by_role("alert")).to_contain_text("not accepted")
            await key_field.fill(acme_key)
            await shots.take(page, "key-prompt")
            await page.get_by_role("button", name="Open the console").click()

            await expect(page.locator("#who")).to_contain_text("tenant acme")
            row = page.locator(f'tr[data-run-id="{mine}"]')
            await expect(row).to_have_attribute("data-status", "interrupted")
            await expect(page.locator(f'tr[data-run-id="{theirs}"]')).to_have_count(0)
            await expect(page.locator("#live-mode")).to_have_text("● live")
            await shots.take(page, "runs-with-key")

            await row.get_by_role("link", name=mine).click()
            await expect(page.locator("main")).to_have_attribute("data-status", "interrupted")
            await (
                page.locator("article.interrupt")
                .get_by_role("button", name="Approve", exact=True)
                .click()
            )
            await expect(page.locator("main")).to_have_attribute("data-status", "finished")
            await expect(page.locator(".state-body")).to_contain_text("sent to ann@example.com")
            await shots.take(page, "approved-with-key")

            # The journal by keyboard: the chosen row is the one tab stop; arrows move.
            chosen = page.locator('tr.ev[aria-selected="true"]')
            last = int(await chosen.get_attribute("data-seq") or 0)
            await chosen.focus()
            await page.keyboard.press("ArrowUp")
            await expect(page.locator("#state-title")).to_have_text(f"State at #{last - 1}")
            await expect(page.locator("#follow")).not_to_be_checked()
            await expect(page.locator('tr.ev[tabindex="0"]')).to_have_count(1)

            # Another tenant's run is not found, as a missing one.
            await page.goto(f"{base}/#/runs/{theirs}")
            await expect(page.locator("main")).to_contain_text(f"No run {theirs}")

            # The key stays in this tab only: forgetting it asks again.
            assert await page.evaluate("sessionStorage.getItem('mainspring.api_key')") == acme_key
            await page.get_by_role("button", name="Forget key").click()
            await expect(page.get_by_label("API key", exact=True)).to_be_visible()
            assert await page.evaluate("sessionStorage.getItem('mainspring.api_key')") is None
            # ... and closes the live stream that carried the forgotten key in its URL.
            await expect(page.locator("#live-mode")).to_have_text("")

            # A key without the approve scope sees the buttons it cannot use disabled.
            await key_field.fill(other_key)
            await page.get_by_role("button", name="Open the console").click()
            await expect(page.locator("#live-mode")).to_have_text("● live")
            await page.goto(f"{base}/#/runs/{theirs}")
            await expect(page.locator("main")).to_have_attribute("data-status", "interrupted")
            approve = page.locator("article.interrupt").get_by_role(
                "button", name="Approve", exact=True
            )
            await expect(approve).to_be_disabled()
            await expect(approve).to_have_attribute("title", "Needs a key with the approve scope")
            await expect(page.locator('[data-action="resume"]')).to_be_disabled()
            await expect(page.locator('[data-action="cancel"]')).to_be_enabled()
        finally:
            await browser.close()


async def test_console_polls_when_streams_are_refused(tmp_path: Path) -> None:
    """A proxy that will not pass Server-Sent Events (here: the browser refuses them): the
    list and the run page fall back to polling and still follow the run, resumed from its
    page, to its end."""
    executable = chromium_path()
    from playwright.async_api import Route, async_playwright, expect

    expect.set_options(timeout=WAIT_MS)
    shots = Shots(tmp_path)
    app = create_app(
        f"sqlite:///{tmp_path / 'console.db'}",
        graphs=[mail],
        config=ServerConfig(auth=False),
        models=models(),
    )

    async def refuse(route: Route) -> None:
        await route.fulfill(status=404, content_type="application/json", body="{}")

    async with (
        serving(app) as base,
        httpx.AsyncClient(base_url=base, timeout=60) as client,
        async_playwright() as pw,
    ):
        run_id = await start_parked(client, "ann@example.com")
        browser = await pw.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 800})
            await page.route("**/v1/watch*", refuse)
            await page.route("**/stream*", refuse)
            await page.goto(f"{base}/#/runs/{run_id}")
            await expect(page.locator("main")).to_have_attribute("data-status", "interrupted")
            await expect(page.locator("#live-mode")).to_have_text("◌ polling")
            await expect(page.locator(".stream-state")).to_have_text("◌ polling")
            # Resume with a value, from the run's own buttons.
            await page.locator('[data-action="resume"]').click()
            await page.get_by_label("Value (JSON) for the pending interrupt").fill("true")
            await page.locator('[data-action="confirm-resume"]').click()
            await expect(page.locator("main")).to_have_attribute("data-status", "finished")
            await expect(page.locator("tr.ev-finished")).to_have_count(1)
            await shots.take(page, "polling-finished")
        finally:
            await browser.close()


async def test_console_shows_a_models_tokens_as_they_stream(tmp_path: Path) -> None:
    """A model's answer streams into the run page (``model_delta`` events, never journaled)
    while the call runs; the journal then has the whole answer in ``effect_finished``."""
    executable = chromium_path()
    from playwright.async_api import async_playwright, expect

    expect.set_options(timeout=WAIT_MS)
    shots = Shots(tmp_path)
    app = create_app(
        f"sqlite:///{tmp_path / 'console.db'}",
        graphs=[chat],
        config=ServerConfig(auth=False),
        models=models(),
    )
    async with (
        serving(app) as base,
        httpx.AsyncClient(base_url=base, timeout=60) as client,
        async_playwright() as pw,
    ):
        started = await client.post("/v1/runs", json={"graph": "chat", "input": {}, "wait": True})
        run = started.json()
        assert run["status"] == "interrupted", run
        browser = await pw.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 800})
            await page.goto(f"{base}/#/runs/{run['run_id']}")
            await expect(page.locator(".stream-state")).to_have_text("● live")
            # Whatever the line under the journal ever shows, kept: no race with its life.
            await page.evaluate(
                """() => {
                  const line = document.querySelector(".delta");
                  window.__deltas = [];
                  new MutationObserver(() => window.__deltas.push(line.textContent))
                    .observe(line, {childList: true, characterData: true, subtree: true});
                }"""
            )
            await (
                page.locator("article.interrupt")
                .get_by_role("button", name="Approve", exact=True)
                .click()
            )
            await expect(page.locator("main")).to_have_attribute("data-status", "finished")
            await expect(page.locator(".state-body")).to_contain_text(STORY)
            seen: list[str] = await page.evaluate("window.__deltas")
            assert any("tell · model:storyteller" in t for t in seen), seen
            partial = [t.split(": ", 1)[1] for t in seen if ": " in t]
            assert any(0 < len(p) < len(STORY) and STORY.startswith(p) for p in partial), seen
            await shots.take(page, "streamed-story")
        finally:
            await browser.close()
