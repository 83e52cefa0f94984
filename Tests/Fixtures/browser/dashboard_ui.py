#!/usr/bin/env python3
"""Drives the Celerity dashboard in headless Chromium (Selenium) and prints what it saw as JSON.

    dashboard_ui.py URL check-overview --worker NODE [--queue Q ...] [--timeout S]
        Loads /, waits (reloading) until the row of NODE in #workers says "online", checks that
        every --queue has a row in #queues (and that there is at least one queue row).
    dashboard_ui.py URL retry-dead --id ENTRY_ID [--timeout S]
        Loads /dead, clicks the Retry button of the row of ENTRY_ID (accepting any confirm()),
        waits for the page to reload and checks that the row is gone.
    dashboard_ui.py URL screenshot --path P --out FILE.png [--wait CSS]
        Loads P in a 1280x900 window and saves a PNG of it.

Exit status: 0 done (JSON on stdout), 1 the page was not as expected, 2 bad arguments,
3 no Chromium, chromedriver or selenium here. Messages go to stderr, prefixed `dashboard_ui:`.

The browser is Debian's /usr/bin/chromium (or $CHROMIUM_BIN) and the driver Debian's
/usr/bin/chromedriver (or $CHROMEDRIVER): both are named to Selenium, so Selenium Manager is
never asked to find or download anything (SE_OFFLINE is set as well).
"""
import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import urllib.parse

CHROMIUM = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")


class Failure(Exception):
    """The page is not as expected (exit 1)."""


def die(message, status):
    print(f"dashboard_ui: {message}", file=sys.stderr)
    sys.exit(status)


def start_browser(width=1280, height=900):
    for path, what in ((CHROMIUM, "chromium (apt install chromium)"), (CHROMEDRIVER, "chromedriver (apt install chromium-driver)")):
        if not os.access(path, os.X_OK):
            die(f"{path} not found: install {what}, or scripts/install-deps.sh", 3)
    os.environ["SE_OFFLINE"] = "true"          # Selenium Manager, if ever asked: no downloads
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as e:
        die(f"python3 cannot import selenium ({e}): pip install selenium, or scripts/install-deps.sh", 3)
    profile = tempfile.mkdtemp(prefix="celerity-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--no-first-run",
              "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
              "--hide-scrollbars", "--no-proxy-server", f"--window-size={width},{height}", f"--user-data-dir={profile}"):
        opts.add_argument(a)
    log = open(os.path.join(profile, "chromedriver.log"), "w")
    service = Service(executable_path=CHROMEDRIVER, log_output=log)
    try:
        driver = webdriver.Chrome(service=service, options=opts)
    except Exception as e:
        shutil.rmtree(profile, ignore_errors=True)
        die(f"cannot start {CHROMIUM} through {CHROMEDRIVER}: {str(e).strip().splitlines()[0] if str(e).strip() else e!r}", 3)
    driver.set_page_load_timeout(30)
    driver.set_window_size(width, height)
    return driver, profile


def load(driver, base, path):
    url = urllib.parse.urljoin(base.rstrip("/") + "/", path.lstrip("/"))
    driver.get(url)
    wait_ready(driver)
    return url


def wait_ready(driver, timeout=10):
    deadline = time.monotonic() + timeout
    while driver.execute_script("return document.readyState") != "complete":
        if time.monotonic() > deadline:
            raise Failure(f"{driver.current_url} did not finish loading within {timeout} s")
        time.sleep(0.05)


def css_string(s):
    """A CSS string literal of s (for attribute selectors)."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\a ") + '"'


def text_of(el):
    return el.get_attribute("textContent").strip()


# ------------------------------------------------------------------------------ commands

def check_overview(driver, args):
    from selenium.webdriver.common.by import By
    url = load(driver, args.url, "/")
    if driver.find_elements(By.CSS_SELECTOR, "#workers") == []:
        raise Failure(f"{url}: no #workers table (title {driver.title!r}): {driver.find_element(By.TAG_NAME, 'body').text[:500]}")
    deadline = time.monotonic() + args.timeout
    selector = f"#workers tr[data-worker={css_string(args.worker)}]"
    while True:
        rows = driver.find_elements(By.CSS_SELECTOR, selector)
        state = text_of(rows[0].find_elements(By.TAG_NAME, "td")[1]) if rows else None
        if state == "online" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
        load(driver, args.url, "/")
    workers = [w.get_attribute("data-worker") for w in driver.find_elements(By.CSS_SELECTOR, "#workers tr[data-worker]")]
    if not rows:
        raise Failure(f"{url}: no row for worker {args.worker!r} in #workers (rows: {workers}) after {args.timeout} s")
    if state != "online":
        raise Failure(f"{url}: worker {args.worker!r} is shown {state!r}, not 'online', after {args.timeout} s")
    cells = [text_of(td) for td in rows[0].find_elements(By.TAG_NAME, "td")]
    queues = []
    for row in driver.find_elements(By.CSS_SELECTOR, "#queues tr[data-queue]"):
        tds = row.find_elements(By.TAG_NAME, "td")
        queues.append({"name": row.get_attribute("data-queue"), "waiting": int(text_of(tds[1])), "consumers": text_of(tds[5])})
    if not queues:
        raise Failure(f"{url}: no queue rows in #queues")
    names = [q["name"] for q in queues]
    missing = [q for q in args.queue if q not in names]
    if missing:
        raise Failure(f"{url}: no row for queue(s) {missing} in #queues (rows: {names})")
    cards = {}
    for card in driver.find_elements(By.CSS_SELECTOR, ".card[data-metric]"):
        value = text_of(card.find_element(By.TAG_NAME, "b"))
        cards[card.get_attribute("data-metric")] = int(value) if value.lstrip("-").isdigit() else value
    return {"url": url, "title": driver.title,
            "worker": {"node": args.worker, "state": state, "queues": cells[2], "concurrency": cells[3], "processed": cells[6], "failed": cells[7]},
            "workers": workers, "queues": queues, "cards": cards}


def retry_dead(driver, args):
    from selenium.common.exceptions import NoAlertPresentException, NoSuchElementException, StaleElementReferenceException, WebDriverException
    from selenium.webdriver.common.by import By
    url = load(driver, args.url, "/dead")
    selector = f"#dead tr[data-dead={css_string(args.id)}]"
    rows = driver.find_elements(By.CSS_SELECTOR, selector)
    listed = [r.get_attribute("data-dead") for r in driver.find_elements(By.CSS_SELECTOR, "#dead tr[data-dead]")]
    if not rows:
        raise Failure(f"{url}: no row for dead letter {args.id!r} in #dead (rows: {listed})")
    row = rows[0]
    buttons = [b for b in row.find_elements(By.CSS_SELECTOR, "button[data-post]") if text_of(b) == "Retry"]
    if not buttons:
        raise Failure(f"{url}: the row of {args.id!r} has no Retry button")
    button = buttons[0]
    posted = button.get_attribute("data-post")
    button.click()
    confirmed, toast, reloaded = None, None, False
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        try:
            alert = driver.switch_to.alert
            confirmed = alert.text
            alert.accept()
            continue
        except NoAlertPresentException:
            pass
        try:
            row.is_displayed()                  # raises once the page has reloaded
            shown = driver.find_element(By.ID, "toast")
            if shown.is_displayed() and text_of(shown):
                toast = text_of(shown)
                if toast.startswith("failed"):
                    raise Failure(f"{url}: Retry of {args.id!r} ({posted}) failed: {toast}")
        except (StaleElementReferenceException, NoSuchElementException):
            # The row's page is gone, or the new one is still loading (every page has a #toast).
            reloaded = True
            break
        except WebDriverException as e:
            # Chromium's word for a node of the page before the reload, when the new one is
            # still loading.
            if "does not belong to the document" not in str(e):
                raise
            reloaded = True
            break
        time.sleep(0.05)
    if not reloaded:
        raise Failure(f"{url}: the page did not reload within {args.timeout} s of clicking Retry of {args.id!r} (toast: {toast!r})")
    after = None
    while after is None and time.monotonic() < deadline:
        try:
            wait_ready(driver)
            after = [r.get_attribute("data-dead") for r in driver.find_elements(By.CSS_SELECTOR, "#dead tr[data-dead]")]
        except (StaleElementReferenceException, WebDriverException):
            time.sleep(0.1)   # the reload was still under way
    if after is None:
        raise Failure(f"{url}: the page after the reload could not be read within {args.timeout} s")
    if args.id in after:
        raise Failure(f"{url}: the row of {args.id!r} is still there after Retry and the reload (toast: {toast!r})")
    return {"url": url, "id": args.id, "posted": posted, "confirm": confirmed, "toast": toast,
            "rows_before": listed, "rows_after": after, "gone": True}


def screenshot(driver, args):
    from selenium.webdriver.common.by import By
    url = load(driver, args.url, args.path)
    if args.wait:
        deadline = time.monotonic() + 10
        while not driver.find_elements(By.CSS_SELECTOR, args.wait):
            if time.monotonic() > deadline:
                raise Failure(f"{url}: nothing matches {args.wait!r} after 10 s")
            time.sleep(0.1)
    out = os.path.abspath(args.out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    if not driver.save_screenshot(out):
        raise Failure(f"cannot write {out}")
    size = driver.get_window_size()
    return {"url": url, "title": driver.title, "out": out, "bytes": os.path.getsize(out), "window": [size["width"], size["height"]]}


def main():
    p = argparse.ArgumentParser(description="Drive the Celerity dashboard in headless Chromium.")
    p.add_argument("url", help="the dashboard, e.g. http://127.0.0.1:5566")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check-overview", help="the worker is online and the queues are listed")
    c.add_argument("--worker", required=True)
    c.add_argument("--queue", action="append", default=[], help="a queue that must have a row (repeatable)")
    c.add_argument("--timeout", type=float, default=15)
    r = sub.add_parser("retry-dead", help="click Retry on a dead letter; its row goes")
    r.add_argument("--id", required=True, help="the dead-letter entry id (the row's data-dead)")
    r.add_argument("--timeout", type=float, default=15)
    s = sub.add_parser("screenshot", help="a PNG of a page, window 1280x900")
    s.add_argument("--path", required=True, help="the page, e.g. / or /dead or /tasks/ID")
    s.add_argument("--out", required=True)
    s.add_argument("--wait", help="a CSS selector to wait for before the shot")
    args = p.parse_args()
    if not args.url.startswith(("http://", "https://")):
        die(f"the URL must start with http:// or https://, not {args.url!r}", 2)

    # Never hang a test run: the whole program has two minutes.
    signal.signal(signal.SIGALRM, lambda *_: die(f"{args.command}: no answer within 120 s", 1))
    signal.alarm(120)
    driver, profile = start_browser()
    try:
        result = {"check-overview": check_overview, "retry-dead": retry_dead, "screenshot": screenshot}[args.command](driver, args)
    except Failure as e:
        die(f"{args.command}: {e}", 1)
    except Exception as e:                      # a WebDriver error: say which, briefly
        die(f"{args.command}: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}", 1)
    finally:
        try:
            driver.quit()
        except Exception:
            pass
        shutil.rmtree(profile, ignore_errors=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
