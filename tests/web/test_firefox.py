"""The editor in Firefox: Debian's firefox-esr driven over WebDriver BiDi by puppeteer-core
(tests/web/firefox), against the same real `vidgraph serve` as the Chromium tests: it loads, adds a
node by search, loads the bundled tiny SVD workflow from the menu, queues it, and shows the WEBP
and MP4 the server made."""
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from browser_support import ARTIFACTS

HERE = Path(__file__).resolve().parent / "firefox"
FIREFOX = os.environ.get("FIREFOX", "/usr/bin/firefox-esr")


@pytest.fixture(scope="module")
def firefox_ready():
    missing = [what for what, ok in (("firefox-esr (apt-get install -y firefox-esr)", os.path.exists(FIREFOX)),
                                     ("node", shutil.which("node") is not None),
                                     ("puppeteer-core (npm ci --prefix tests/web/firefox)",
                                      (HERE / "node_modules" / "puppeteer-core").is_dir()))
               if not ok]
    if missing:
        message = "missing for the Firefox test: " + ", ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def test_editor_builds_queues_and_previews_in_firefox(firefox_ready, server):
    # The server's folders hold the bundled demo's checkpoint and image (conftest.server_dirs).
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    run = subprocess.run(["node", str(HERE / "editor_in_firefox.mjs"), server, str(ARTIFACTS)],
                         capture_output=True, text=True, timeout=400, env={**os.environ, "FIREFOX": FIREFOX})
    assert run.returncode == 0, run.stderr[-3000:]
    findings = json.loads(run.stdout.strip().splitlines()[-1])
    assert "failure" not in findings, findings["failure"]
    assert findings["errors"] == []
    assert findings["ksamplerControls"] >= 7  # seed, control, steps, cfg, sampler, scheduler, denoise
    assert findings["menuOption"] and findings["nodes"] >= 9
    assert findings["webpLoaded"] is True
    # 0 means Firefox has no H.264 decoder on this system (no ffmpeg): the file is still offered.
    assert findings["mp4ReadyState"] in (0, 1, 2, 3, 4)
    (ARTIFACTS / "firefox.json").write_text(json.dumps(findings, indent=2))
