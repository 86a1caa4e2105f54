"""A notebook as a person runs it: JupyterLab from the kit's .venv in a real browser (Debian's Chromium driven by
Playwright; no browser download), a smoke notebook opened from notebooks/ unchanged, Run All, and then: no cell
errored, every cell ran, the notebook recorded its results, and `git status` is still clean.

Skipped where Chromium or Playwright is absent; `.ci/run` installs Chromium and runs it."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = "09_gradient_variance"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic"]

playwright_api = pytest.importorskip("playwright.sync_api")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (apt-get install chromium)")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _git_status() -> str:
    return subprocess.run(["git", "status", "--porcelain", "--", "notebooks"], cwd=ROOT, capture_output=True,
                          text=True).stdout


@pytest.fixture
def lab(tmp_path):
    port, token = _free_port(), "kdlib-browser-test"
    env = {**os.environ, "KDLIB_PROFILE": "smoke", "KDLIB_PROGRESS": "0", "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg"),
           "JUPYTER_DATA_DIR": str(tmp_path / "data"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    cmd = [sys.executable, "-m", "jupyter", "lab", "--config", str(ROOT / "jupyter_server_config.py"),  # as scripts/lab.sh
           "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={ROOT}",
           f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}", "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(tmp_path / "lab.log", "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("JupyterLab did not start:\n" + (tmp_path / "lab.log").read_text()[-3000:])
    yield base, token
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


def test_run_all_in_jupyterlab_leaves_no_error_and_a_clean_tree(lab, tmp_path):
    base, token = lab
    path = ROOT / "notebooks" / f"{NOTEBOOK}.ipynb"
    backup = path.read_bytes()
    status_before = _git_status()
    record = ROOT / "outputs" / "scratch" / "smoke" / f"{NOTEBOOK}.json"
    record.unlink(missing_ok=True)
    try:
        with playwright_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{base}/lab/tree/notebooks/{NOTEBOOK}.ipynb?token={token}", timeout=120_000)
            page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=120_000)
            # JupyterLab 4 may ask which kernel to start; the notebook names python3 (the kit's .venv): accept it.
            try:
                page.wait_for_selector(".jp-Dialog button.jp-mod-accept", timeout=15_000).click()
            except playwright_api.TimeoutError:
                pass
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)
            page.click(".lm-MenuBar-itemLabel:text-is('Run')")
            page.click(".lm-Menu-itemLabel:text-is('Run All Cells')")
            deadline = time.time() + 600
            while time.time() < deadline and not record.exists():
                assert not page.query_selector(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']"), \
                    "a cell errored in JupyterLab"
                time.sleep(2)
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)
            page.keyboard.press("Control+s")
            time.sleep(3)
            page.screenshot(path=str(tmp_path / "lab.png"), full_page=False)
            browser.close()
        # Run All stops at the first error: the record the last cell writes exists only if every cell ran without one.
        assert record.exists(), f"the notebook did not run to its last cell ({record} missing)"
        assert _git_status() == status_before, "opening, running and saving a notebook changed `git status`"
        saved = json.loads(path.read_text())
        assert not any(c.get("outputs") for c in saved["cells"] if c["cell_type"] == "code")  # saved as committed
        rec = json.loads(record.read_text())
        assert rec["notebook"] == NOTEBOOK and rec["profile"] == "smoke"
    finally:
        path.write_bytes(backup)
