"""The one headless-chromium set-up, for the browser tests and docs/serve_screenshots.py.

Debian's chromium, driven by playwright (no browser is ever downloaded). Plain Python, no pytest:
the screenshot script imports it too.
"""

from __future__ import annotations

import shutil

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--autoplay-policy=no-user-gesture-required",
]
# a fake microphone, granted without asking (add --use-file-for-fake-audio-capture=WAV)
FAKE_MIC_ARGS = [*BROWSER_ARGS, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
