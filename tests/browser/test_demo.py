"""End to end in a real browser: the demo shop's live panel follows the shopper.

Starts `python -m recsrv demo` as a process, opens /demo in Debian's Chromium through
Playwright, browses from a tent to related products, and checks that the
"Recommended for you" panel, pushed over SSE, changes to related items within one
second of each click. "Related" means: in the clicked product's category or one
its shoppers move on to (recsrv.demo.related_categories), with each product's category
read from the page's own /demo/catalog.json.

The browser is Debian's /usr/bin/chromium (scripts/services installs it), never one
downloaded by `playwright install`. Without it the tests fail: they are never skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from recsrv import demo
from tests.conftest import ROOT, end_process, free_port, spawn_recsrv

CHROMIUM = os.environ.get("RECSRV_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
LIVE_WITHIN_MS = 1000
K = 6  # the demo page asks for six items per panel


if not os.access(CHROMIUM, os.X_OK):
    raise RuntimeError(
        f"no Chromium at {CHROMIUM}: run scripts/services (apt-get install chromium)"
    )


# ---- the server -----------------------------------------------------------------


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def demo_events() -> int:
    """How many events `recsrv demo` loads: the catalog and the whole history."""
    return len(demo.catalog()) + len(demo.history(0.0))


def wait_until_loaded(base: str, server: subprocess.Popen[bytes], log: Path) -> None:
    """Ready, serving the catalog, and every demo event applied to the model."""
    expected = demo_events()
    deadline = time.monotonic() + 60
    last: object = None
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"recsrv demo exited with {server.returncode}:\n{log.read_text()}")
        try:
            get_json(base + "/readyz")
            get_json(base + "/demo/catalog.json")
            last = get_json(base + "/v1/popular?k=1")["model"]
            if last["events"] >= expected:  # type: ignore[index]
                return
        except (urllib.error.URLError, ConnectionError) as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"demo not loaded within 60 s (last: {last}):\n{log.read_text()}")


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m recsrv demo` on a free port, run in a temporary directory that holds its
    checkpoints; its base URL. Shared by the tests of this module."""
    tmp_path = tmp_path_factory.mktemp("demo")
    port = free_port()
    server, log = spawn_recsrv(tmp_path, port, {}, command="demo")
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_loaded(base, server, log)
        yield base
    finally:
        end_process(server)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page in a context of its own (its own localStorage, so its own session);
    the test fails if the page logs an error or throws."""
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
    yield page
    context.close()
    assert errors == []


# ---- the page -------------------------------------------------------------------

# Resolves to the panel's item ids once it lists `k` items, differs from `before`
# and lists a majority of `related` items; otherwise keeps Playwright polling.
PANEL_CHANGED = """
({ panel, before, related, k }) => {
  const ids = Array.from(
    document.querySelectorAll(`#${panel} a[data-item-id]`), (a) => a.dataset.itemId);
  if (ids.length < k || ids.join(",") === before.join(",")) return false;
  const hits = ids.filter((id) => related.includes(id)).length;
  return 2 * hits > ids.length ? ids : false;
}
"""


class Shop:
    """The demo page, with the catalog it loaded, and timings of the live updates."""

    def __init__(self, page: Any, catalog: list[dict[str, Any]]) -> None:
        self.page = page
        self.items = {item["item_id"]: item for item in catalog}
        self.timings_ms: list[float] = []

    def related_items(self, item_id: str) -> list[str]:
        wanted = demo.related_categories(self.items[item_id]["category"])
        return [i for i, item in self.items.items() if item["category"] in wanted]

    def ids(self, panel: str) -> list[str]:
        ids: list[str] = self.page.eval_on_selector_all(
            f"#{panel} a[data-item-id]", "links => links.map((a) => a.dataset.itemId)"
        )
        return ids

    def wait_for_list(self, panel: str) -> list[str]:
        self.page.wait_for_selector(f"#{panel} a[data-item-id]", timeout=5000)
        return self.ids(panel)

    def click_and_follow(self, link: str, item_id: str, before: list[str]) -> list[str]:
        """Click `link` (a product); the live panel must change to items related to
        `item_id` within LIVE_WITHIN_MS of the click. Returns the new list."""
        self.page.click(link)
        started = time.perf_counter()
        handle = self.page.wait_for_function(
            PANEL_CHANGED,
            arg={
                "panel": "panel-recommended",
                "before": before,
                "related": self.related_items(item_id),
                "k": K,
            },
            timeout=LIVE_WITHIN_MS,
            polling=20,
        )
        self.timings_ms.append((time.perf_counter() - started) * 1000)
        ids: list[str] = handle.json_value()
        return ids


def pick(candidates: list[str], prefer: Any) -> str:
    """The first candidate that `prefer` likes, else the first one."""
    return next((c for c in candidates if prefer(c)), candidates[0])


@pytest.mark.timeout(120)
def test_live_recommendations_follow_the_shopper(demo_server: str, page: Any) -> None:
    from playwright.sync_api import expect

    base = demo_server
    catalog: list[dict[str, Any]] = get_json(base + "/demo/catalog.json")
    tent = next(i["item_id"] for i in catalog if "tent" in i["tags"] and i["in_stock"])
    shop = Shop(page, catalog)
    page.goto(base + "/demo")
    # A new session: the SDK's auto-filled strip shows what is popular.
    popular = shop.wait_for_list("home-recommended")
    assert len(popular) == K

    # 1. From the front page to a tent: the live list turns to camping and its neighbours.
    after_tent = shop.click_and_follow(f'#grid a[data-item-id="{tent}"]', tent, popular)
    expect(page.locator("#product h1")).to_have_text(shop.items[tent]["title"])

    # 2. A similar product of another kind (a sleeping bag, a pad…).
    similar = shop.wait_for_list("panel-similar")
    kind = shop.items[tent]["tags"][1]
    second = pick(similar, lambda i: kind not in shop.items[i]["tags"])
    after_second = shop.click_and_follow(
        f'#panel-similar a[data-item-id="{second}"]', second, after_tent
    )
    assert tent not in after_second and second not in after_second  # seen: left out

    # 3. Something bought with it, from a neighbouring category if there is one.
    together = shop.wait_for_list("panel-bought-together")
    home = shop.items[second]["category"]
    third = pick(
        [i for i in together if i not in (tent, second)],
        lambda i: shop.items[i]["category"] not in (home, "books"),
    )
    shop.click_and_follow(f'#panel-bought-together a[data-item-id="{third}"]', third, after_second)

    # 4. Into the cart: the header counts it, the server applies the cart event, and the
    # live panel then shows the list the server gives this session after the cart.
    session = page.evaluate("window.demoRec.sessionId")
    carts = get_json(f"{base}/v1/items/{third}")["counters"]["add_to_cart"]
    page.click("#add-to-cart")
    expect(page.locator("#cart-count")).to_have_text("1", timeout=LIVE_WITHIN_MS)
    deadline = time.monotonic() + 5
    while get_json(f"{base}/v1/items/{third}")["counters"]["add_to_cart"] != carts + 1:
        assert time.monotonic() < deadline, "the cart event never reached the model"
        time.sleep(0.05)
    after_cart = get_json(f"{base}/v1/recommendations?session_id={session}&k={K}")
    expected = [item["item_id"] for item in after_cart["items"]]
    page.wait_for_function(
        "(ids) => JSON.stringify(Array.from(document.querySelectorAll("
        "'#panel-recommended a[data-item-id]'), (a) => a.dataset.itemId)) === JSON.stringify(ids)",
        arg=expected,
        timeout=LIVE_WITHIN_MS,
        polling=20,
    )
    assert third not in expected
    expect(page.locator("#live-strategy")).to_have_text(after_cart["strategy"])
    screenshot(page)

    page.goto(base + "/demo#cart")
    expect(page.locator("#cart .cart-line")).to_have_count(1)
    expect(page.locator("#cart .cart-title")).to_have_text(shop.items[third]["title"])
    print(f"live panel updates after a click, ms: {[round(t) for t in shop.timings_ms]}")


def screenshot(page: Any) -> None:
    """test-artifacts/demo.png; also docs/demo.png when RECSRV_UPDATE_SCREENSHOT=1."""
    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    path = artifacts / "demo.png"
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(path))
    if os.environ.get("RECSRV_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(path, ROOT / "docs" / "demo.png")


# ---- the SDK on a page of a shop -------------------------------------------------

SHOP_PAGE = """<!doctype html>
<html><body>
<div data-recsrv-view="camping-tent-2-person"></div>
<div id="auto" data-recsrv="recommendations" data-recsrv-k="3"></div>
<script src="/sdk.js"></script>
<script>window.rec = Recsrv.init({ key: "pk_test", userId: "u-sdk", k: 4 });</script>
</body></html>
"""


class EventPosts:
    """Every request a page makes to POST /v1/events, with its decoded body."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.requests: list[Any] = []
        page.on("request", self._seen)

    def _seen(self, request: Any) -> None:
        if "/v1/events" in request.url and request.method == "POST":
            self.requests.append(request)

    def wait(self, count: int, timeout_ms: int = 3000) -> list[list[dict[str, Any]]]:
        """The bodies once at least `count` requests were made."""
        deadline = time.monotonic() + timeout_ms / 1000
        while len(self.requests) < count:
            assert time.monotonic() < deadline, f"{len(self.requests)} of {count} POSTs seen"
            self.page.wait_for_timeout(20)
        return [json.loads(request.post_data) for request in self.requests]


def serve_shop_page(page: Any, base: str, html: str = SHOP_PAGE) -> None:
    """A shop's own page, served at the server's origin (as if recsrv were proxied)."""
    page.route(
        base + "/shop.html",
        lambda route: route.fulfill(status=200, content_type="text/html", body=html),
    )


@pytest.mark.timeout(120)
def test_sdk_reports_events_and_delivers_lists(demo_server: str, page: Any) -> None:
    base = demo_server
    posts = EventPosts(page)
    serve_shop_page(page, base)
    started = time.time()
    page.goto(base + "/shop.html")

    # data-recsrv-view reports a view on load, batched into one POST.
    [first] = posts.wait(1)
    session = page.evaluate("localStorage.getItem('recsrv_session')")
    assert session == page.evaluate("rec.sessionId")
    [view] = first
    assert view["type"] == "view" and view["item_id"] == "camping-tent-2-person"
    assert view["session_id"] == session and view["user_id"] == "u-sdk"
    assert started - 1 <= view["ts"] <= time.time() + 1
    assert len(view["event_id"]) == 36
    headers = posts.requests[0].headers
    assert headers["content-type"] == "application/json"
    assert headers["authorization"] == "Bearer pk_test"
    assert posts.requests[0].response().status == 202

    # data-recsrv="recommendations" is filled with links, k of them.
    page.wait_for_selector("#auto a[data-item-id]")
    assert page.locator("#auto a[data-item-id]").count() == 3

    # Events within the flush interval go together; 20 queued go at once.
    page.evaluate("rec.click('camping-tent-2-person'); rec.addToCart('camping-tent-2-person', 2)")
    batch = posts.wait(2)[1]
    assert [e["type"] for e in batch] == ["click", "add_to_cart"]
    assert batch[1]["quantity"] == 2
    assert posts.requests[1].response().status == 202  # none in flight: 20 go at once
    page.evaluate("for (let i = 0; i < 25; i++) rec.search('tent ' + i)")
    bodies = posts.wait(4)
    assert [len(body) for body in bodies[2:4]] == [20, 5]
    assert len({e["event_id"] for body in bodies for e in body}) == 28

    # The list endpoints resolve to the list JSON.
    lists = page.evaluate(
        """async () => [
            await rec.similar('camping-tent-2-person', 3),
            await rec.boughtTogether('camping-tent-2-person', 2),
            await rec.recommendations({ k: 5 }),
        ]"""
    )
    assert [len(body["items"]) for body in lists] == [3, 2, 5]
    assert lists[2]["strategy"] == "session" and lists[2]["model"]["events"] > 0

    # subscribe: the current list at once, then one for each change; unsubscribe stops it.
    received = page.evaluate(
        """() => new Promise((resolve) => {
            const lists = [];
            const stop = rec.subscribe((list) => {
                lists.push(list.items.map((item) => item.item_id));
                if (lists.length === 1) rec.view(list.items[0].item_id);
                else { stop(); resolve(lists); }
            }, { k: 2 });
        })"""
    )
    assert len(received) == 2 and received[0] != received[1]
    assert received[0][0] not in received[1]  # viewed, so left out now

    # A page going away hands its queue to sendBeacon, as text/plain with ?key=.
    page.evaluate(
        "rec.removeFromCart('camping-tent-2-person'); dispatchEvent(new Event('pagehide'))"
    )
    beacon = posts.wait(6)[5]
    assert [e["type"] for e in beacon] == ["remove_from_cart"]
    assert posts.requests[5].url == base + "/v1/events?key=pk_test"
    assert posts.requests[5].headers["content-type"].startswith("text/plain")

    # After 30 minutes idle, the next event starts a new session; identify sets the user.
    renewed = page.evaluate(
        """() => {
            const old = rec.sessionId;
            localStorage.setItem('recsrv_session_seen', String(Date.now() - 31 * 60 * 1000));
            rec.identify('u-other');
            rec.view('coffee-coffee-grinder-hand');
            return [old, rec.sessionId, localStorage.getItem('recsrv_session')];
        }"""
    )
    assert renewed[0] == session and renewed[1] != session and renewed[2] == renewed[1]
    [latest] = posts.wait(7)[6]
    assert latest["session_id"] == renewed[1] and latest["user_id"] == "u-other"


@pytest.mark.timeout(60)
def test_sdk_failures_never_reach_the_page(demo_server: str, browser: Any) -> None:
    """A server that is down, an unknown item: calls resolve to null, nothing throws."""
    context = browser.new_context()
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        down = f"http://127.0.0.1:{free_port()}"
        html = SHOP_PAGE.replace('key: "pk_test"', f'endpoint: "{down}"')
        serve_shop_page(page, demo_server, html)
        page.goto(demo_server + "/shop.html")
        results = page.evaluate(
            """async () => {
                rec.view('x'); rec.click('x'); rec.addToCart('x'); rec.search('x');
                const stop = rec.subscribe(() => {});
                await rec.flush();
                const queued = rec.queue.length;  // before the retry timer fires
                const answers = [await rec.similar('x'), await rec.recommendations()];
                stop();
                const live = Recsrv.init({ endpoint: location.origin });
                answers.push(await live.similar('no-such-item'), await live.boughtTogether(''));
                return { answers, queued };
            }"""
        )
        assert results["answers"] == [None, None, None, None]
        assert results["queued"] == 5  # kept, to be sent once the server is back
        assert errors == []
    finally:
        context.close()


@pytest.mark.timeout(120)
def test_with_api_keys_the_demo_runs_on_a_public_key(tmp_path: Path, browser: Any) -> None:
    """`/demo?key=PUBLIC_KEY`: the SDK sends the key, so a server with keys serves the
    page's lists and takes its browsing events; without the key, it refuses them."""
    port = free_port()
    keys = {"RECSRV_AUTH__PUBLIC_KEYS": "pk-demo", "RECSRV_AUTH__SECRET_KEYS": "sk-demo"}
    server, log = spawn_recsrv(tmp_path, port, keys, command="demo")
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                get_json(base + "/readyz")
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        context = browser.new_context(viewport={"width": 1280, "height": 1000})
        page = context.new_page()
        refused: list[int] = []
        page.on("response", lambda r: refused.append(r.status) if r.status == 401 else None)
        page.goto(base + "/demo?key=pk-demo")
        page.wait_for_selector("#home-recommended a[data-item-id]", timeout=10_000)
        first = page.eval_on_selector("#grid a[data-item-id]", "a => a.dataset.itemId")
        page.click(f'#grid a[data-item-id="{first}"]')
        page.wait_for_selector("#panel-recommended a[data-item-id]", timeout=10_000)
        assert refused == []
        context.close()
        # The same page without the key gets nothing from the API.
        context = browser.new_context()
        page = context.new_page()
        statuses: list[int] = []
        page.on("response", lambda r: statuses.append(r.status) if "/v1/" in r.url else None)
        page.goto(base + "/demo")
        page.wait_for_timeout(1500)
        assert statuses and set(statuses) == {401}
        context.close()
    finally:
        server.terminate()
        server.wait(timeout=20)
