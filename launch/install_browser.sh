#!/usr/bin/env bash
# Installs Debian's Chromium for the browser tests of the report and the viewer
# (tests/test_report_browser.py, tests/test_viewer_browser.py). Playwright drives this binary
# and never downloads a browser. Without root or apt-get it says why and exits 0: the browser
# tests then skip, and pytest's -ra summary prints the reason.
set -uo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      --no-install-recommends chromium chromium-driver >/dev/null; } \
    || echo "install_browser: apt-get could not install chromium: the browser tests will skip" >&2
else
  echo "install_browser: no /usr/bin/chromium, and no apt-get as root to install it" \
       "(sudo apt-get install chromium chromium-driver): the browser tests will skip" >&2
fi
exit 0
