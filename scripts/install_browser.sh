#!/usr/bin/env bash
# Install Debian's chromium for the browser tests (tests/test_browser.py drives it with Playwright's
# Python API through executable_path=/usr/bin/chromium). Never runs `playwright install`: that
# downloads a browser build from a CDN, which CI and offline machines cannot reach.
set -euo pipefail

if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then
  echo "chromium already installed: $(chromium --version 2>/dev/null || echo /usr/bin/chromium)"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "need root (or sudo) to apt-get install chromium" >&2; exit 1
  fi
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# Debian calls the package "chromium"; Ubuntu's "chromium-browser" is a snap shim that does not work in CI.
$SUDO apt-get install -y -q --no-install-recommends chromium fonts-liberation
chromium --version || true
