"""Headless Chromium for the tests that look at pages (the report, the viewer).

Debian's ``chromium`` (installed by ``launch/install_browser.sh``, which README's test
command and ``.ci/run`` run) driven by the PyPI ``playwright`` package with
``executable_path``: no browser is ever downloaded. Where either is missing, :func:`page` skips the test and says why. WebGL runs on SwiftShader
(software), which ``--disable-gpu`` leaves on.

Also a screenshot tool for the README's pictures:

  python -m tests.browser URL_OR_HTML_FILE OUT.png [--width=1200 --height=800] [--wait=8]
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys

CHROMIUM = os.environ.get("LRM_JAX_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--enable-unsafe-swiftshader"]


def why_unavailable() -> str | None:
  """Why there is no browser to test with, or None."""
  if not (os.path.isfile(CHROMIUM) or shutil.which(CHROMIUM)):
    return (f"no Chromium at {CHROMIUM} (bash launch/install_browser.sh as root "
            "installs it: apt-get install chromium chromium-driver)")
  try:
    import playwright.sync_api  # noqa: F401  pylint: disable=unused-import,g-import-not-at-top
  except ImportError:
    return "the playwright package is not installed (pip install -r requirements-test.txt)"
  return None


class Page:
  """A playwright page plus what it reported: ``errors`` (console errors, uncaught
  exceptions) and ``requests`` (every URL it fetched)."""

  def __init__(self, page):
    self.page = page
    self.errors: list[str] = []
    self.requests: list[str] = []
    page.on("console", lambda m: self.errors.append(f"console.{m.type}: {m.text}")
            if m.type == "error" else None)
    page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
    page.on("request", lambda r: self.requests.append(r.url))


@contextlib.contextmanager
def page(width: int = 1200, height: int = 800):
  """``with page() as p:`` a fresh Chromium page (``pytest.skip`` if there is none)."""
  reason = why_unavailable()
  if reason is not None:
    import pytest  # pylint: disable=g-import-not-at-top
    pytest.skip(f"no browser test: {reason}")
  from playwright.sync_api import sync_playwright  # pylint: disable=g-import-not-at-top
  with sync_playwright() as pw:
    browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
    try:
      yield Page(browser.new_page(viewport={"width": width, "height": height}))
    finally:
      browser.close()


def hide_viser_notices(p) -> None:
  """Hides viser's "software WebGL rendering detected" notice (it covers part of the
  scene)."""
  p.evaluate("() => document.querySelectorAll('[role=alert]').forEach("
             "e => { e.style.display = 'none'; })")


def main(argv: list[str]) -> None:
  import argparse  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  ap = argparse.ArgumentParser(prog="python -m tests.browser")
  ap.add_argument("target")
  ap.add_argument("out")
  ap.add_argument("--width", type=int, default=1200)
  ap.add_argument("--height", type=int, default=800)
  ap.add_argument("--wait", type=float, default=8.0, help="seconds to let the page render")
  ap.add_argument("--full_page", action="store_true")
  a = ap.parse_args(argv)
  url = a.target if "://" in a.target else "file://" + os.path.abspath(a.target)
  with page(a.width, a.height) as p:
    p.page.goto(url)
    time.sleep(a.wait)
    hide_viser_notices(p.page)
    time.sleep(0.5)
    p.page.screenshot(path=a.out, full_page=a.full_page)
    print("\n".join(p.errors) or "no console errors")


if __name__ == "__main__":
  main(sys.argv[1:])
