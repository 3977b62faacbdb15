"""The results as a person sees them: `genlib ui` over the store of a real pipeline run (the
session's ``pipeline_store``, shared with the pipeline tests; or the finished `make demo` store
named by $GENLIB_BROWSER_STORE), its printed URLs opened in headless Chromium. Screenshots go to
$GENLIB_SCREENSHOTS (default: the test's temporary directory); the README's pictures in docs/
are this test's, over a `make demo` store:

    GENLIB_BROWSER_STORE=$PWD/.genlib GENLIB_SCREENSHOTS=docs .venv/bin/python -m pytest tests/e2e/test_browser.py

(runs.png and report.png are the README's; metrics.png is not used)
"""

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from genlib.tracking import Tracker

pytestmark = pytest.mark.integration

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")

# Environment variables under which MLflow turns its telemetry off by itself (CI systems, pytest):
# removed from `genlib ui`'s environment, so that only genlib's own default can turn it off.
MLFLOW_CI_MARKERS = ("PYTEST_CURRENT_TEST", "GITHUB_ACTIONS", "CI", "CIRCLECI", "GITLAB_CI", "JENKINS_URL", "TRAVIS",
                     "TF_BUILD", "BITBUCKET_BUILD_NUMBER", "CODEBUILD_BUILD_ARN", "BUILDKITE", "TEAMCITY_VERSION",
                     "CLOUD_RUN_EXECUTION", "RUNBOT_HOST_URL", "RUNBOT_BUILD_NAME", "RUNBOT_WORKER_ID",
                     "MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK")


@contextlib.contextmanager
def genlib_ui(home: Path, timeout: float = 90):
    """`genlib ui --no-browser` on the store under ``home`` (which holds a finished pipeline): yields
    (base URL, the lines it printed about where to look: the runs page, then the latest report)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in MLFLOW_CI_MARKERS and k != "MLFLOW_TRACKING_URI"}
    env["GENLIB_HOME"] = str(home)
    proc = subprocess.Popen([sys.executable, "-m", "genlib.cli", "ui", "--no-browser", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    try:
        deadline = time.monotonic() + timeout
        while not any(line.startswith("the latest pipeline report") for line in lines):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"genlib ui printed no report: {''.join(lines)[-3000:]}")
            time.sleep(0.3)
        yield f"http://127.0.0.1:{port}", [line.strip() for line in lines if line.startswith(("runs of ", "the latest"))]
    finally:
        started = _descendants(proc.pid)  # the MLflow server, its web workers and job consumers
        proc.terminate()
        proc.wait(timeout=60)
        assert started and not [pid for pid in started if Path(f"/proc/{pid}").exists()], \
            "genlib ui left processes of its server running"


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid``, from /proc (ppid is the 4th field of /proc/N/stat)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def printed_url(lines: list[str], starts: str) -> str:
    """The first URL on the printed line that starts with ``starts``."""
    line = next(line for line in lines if line.startswith(starts))
    return next(word for word in line.split() if word.startswith("http"))


@contextlib.contextmanager
def chromium(width: int = 1400, height: int = 1000):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert CHROMIUM and CHROMEDRIVER, ("the browser test needs Debian's chromium and chromium-driver: "
                                       "`make browser` (or apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={width},{height}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for_text(driver, text: str, timeout: float = 60) -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(lambda d: text in d.find_element(By.TAG_NAME, "body").text,
                                         f"{text!r} never appeared on {driver.current_url}")
    return driver.find_element(By.TAG_NAME, "body").text


def test_genlib_ui_lands_on_the_runs_and_one_click_opens_the_report(request, monkeypatch, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    store = os.environ.get("GENLIB_BROWSER_STORE")
    home = Path(store) if store else request.getfixturevalue("pipeline_store").home
    monkeypatch.setenv("GENLIB_HOME", str(home))
    shots = Path(os.environ.get("GENLIB_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    tracker = Tracker()
    experiment = tracker.client.get_experiment_by_name("genlib-digits").experiment_id
    runs = {r.info.run_name: r for r in tracker.client.search_runs([experiment])}
    parent, scored = runs["pipeline-digits-quick"], runs["evaluate-vae"]

    with genlib_ui(home) as (base, printed), chromium() as driver:
        assert printed_url(printed, "runs of genlib-digits") == \
            f"{base}/#/experiments/{experiment}/runs?workflowType=machine_learning"
        with urllib.request.urlopen(f"{base}/ajax-api/3.0/mlflow/ui-telemetry", timeout=10) as answer:
            assert json.loads(answer.read())["disable_ui_telemetry"] is True  # genlib's default, not CI's
        driver.get(printed_url(printed, "runs of genlib-digits"))
        page = wait_for_text(driver, "pipeline-digits-quick")  # genlib's runs table (stages nested under it)
        assert "Detect issues" not in page and "Latency" not in page  # not MLflow's GenAI overview
        assert driver.current_url.startswith(f"{base}/#/experiments/{experiment}/runs")
        for close in driver.find_elements(By.CSS_SELECTOR, "button[aria-label='Close']"):
            close.click()  # MLflow's assistant panel: room for the table
        driver.find_element(By.CSS_SELECTOR, "button[data-component-id*='runnamecellrenderer']").click()
        page = wait_for_text(driver, "train-vae")  # the pipeline's stages, nested under it
        assert "evaluate-vae" in page and "reweight" in page
        driver.save_screenshot(str(shots / "runs.png"))

        driver.get(f"{base}/#/experiments/{experiment}/runs/{scored.info.run_id}")
        metric = next(k for k in scored.data.metrics if k.startswith("test_iwae"))
        page = wait_for_text(driver, "fid_domain")  # the evaluate run shows its metrics
        for name in (metric, "test_elbo_bpd", "kid_domain", "copy_rate_pixel", "precision_domain"):
            assert name in page
        driver.save_screenshot(str(shots / "metrics.png"))

        report = printed_url(printed, "the latest pipeline report")
        assert report == f"{base}/#/experiments/{experiment}/runs/{parent.info.run_id}/artifacts/report.html"
        driver.get(report)  # one click from the printed line: the report inside the UI
        frame = WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.TAG_NAME, "iframe"))[0]
        driver.switch_to.frame(frame)
        wait_for_text(driver, "genlib pipeline digits-quick")
        images = driver.find_elements(By.TAG_NAME, "img")
        assert len(images) >= 5  # samples of both models, interpolations, traversals, closest pairs
        assert all(driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img)
                   for img in images), "an image of the report did not render"
        assert "fid_domain" in driver.find_element(By.TAG_NAME, "body").text
        driver.switch_to.default_content()

        file = next(line for line in printed if line.startswith("the latest")).split("file://", 1)[1]
        driver.get(f"file://{file}")  # the same report as a local file, as printed for the embedded store
        wait_for_text(driver, "genlib pipeline digits-quick")
        driver.set_window_size(1200, 1500)  # the top of the report: the results table and the first model
        driver.save_screenshot(str(shots / "report.png"))
    assert all((shots / name).stat().st_size > 10_000 for name in ("runs.png", "metrics.png", "report.png"))
