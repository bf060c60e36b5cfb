"""Drives the dashboard (/ui) in a real headless browser (Debian's chromium through
playwright, no browser download): logs in with an admin token and checks the volumes, their
usage bars and the clients; logs in with a project viewer's token and checks that only that
project's volumes show. Takes screenshots into OUT_DIR.

usage: browse.py BASE_URL ADMIN_TOKEN_FILE VIEWER_TOKEN_FILE OUT_DIR VOLUME... -- VIEWER_VOLUME...
"""
import os
import sys

from playwright.sync_api import sync_playwright

base, admin_file, viewer_file, out = sys.argv[1:5]
rest = sys.argv[5:]
split = rest.index("--")
all_volumes, viewer_volumes = rest[:split], rest[split + 1:]
chromium = os.environ.get("STRATA_CHROMIUM", "/usr/bin/chromium")


def token(path):
    with open(path) as f:
        return f.read().strip()


def volumes_shown(page):
    return sorted(page.eval_on_selector_all("#volumes tbody tr[data-volume]", "rows => rows.map(r => r.dataset.volume)"))


def login(page, secret):
    page.goto(base + "/ui")
    page.fill("#token", secret)
    page.click("#login-form button")
    page.wait_for_selector("body[data-ready='1']", timeout=10000)
    # A second poll fills the rates.
    page.wait_for_function("document.getElementById('rate-write').textContent !== '–'", timeout=10000)


with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
    # The page forbids eval (CSP); playwright's waits evaluate strings.
    page = browser.new_page(viewport={"width": 1280, "height": 1100}, bypass_csp=True)
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    # A wrong token is refused on the login form.
    page.goto(base + "/ui")
    page.fill("#token", "not-a-token")
    page.click("#login-form button")
    page.wait_for_function("document.getElementById('login-error').textContent !== ''")
    assert "refused" in page.inner_text("#login-error"), page.inner_text("#login-error")

    login(page, token(admin_file))
    # A few polls, so the throughput line has points.
    page.wait_for_function("window.strataPolls >= 4", timeout=15000)
    shown = volumes_shown(page)
    assert shown == sorted(all_volumes), ("admin sees every volume", shown, all_volumes)
    # Usage bars: the volume with data has a non-empty bar against its quota.
    bars = page.eval_on_selector_all(
        "#volumes tbody tr[data-volume] td:nth-child(4) > span",
        "els => els.map(e => [e.closest('tr').dataset.volume, +e.dataset.used, +e.dataset.quota])")
    assert any(u > 0 and q > 0 for _, u, q in bars), bars
    assert "default" in page.inner_text("#classes")
    assert page.inner_text("#sessions tbody").count("\n") >= 0 and "mnt" in page.inner_text("#sessions"), page.inner_text("#sessions")
    for v in all_volumes:
        assert v in page.inner_text("#volumes")
    page.screenshot(path=os.path.join(out, "dashboard-admin.png"), full_page=True)

    # Log out, then the viewer: only its project's volumes, and no cluster-wide counters.
    page.click("#logout")
    page.wait_for_selector("#login:not([hidden])")
    login(page, token(viewer_file))
    shown = volumes_shown(page)
    assert shown == sorted(viewer_volumes), ("viewer sees its project's volumes only", shown, viewer_volumes)
    assert page.inner_text("#rate-ops") == "cluster only", page.inner_text("#rate-ops")
    for v in set(all_volumes) - set(viewer_volumes):
        assert v not in page.inner_text("body"), f"viewer sees {v}"
    page.screenshot(path=os.path.join(out, "dashboard-viewer.png"), full_page=True)
    assert not errors, errors
    browser.close()
print("dashboard ok")
