"""The results as a person sees them: MLflow's UI, served by `genlib server` over the store of a
real pipeline run (the session's ``pipeline_store``, shared with the pipeline tests), opened in
headless Chromium (Debian's, driven by Selenium). Screenshots go to $GENLIB_SCREENSHOTS (default:
the test's temporary directory)."""

import contextlib
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from genlib.cli import server_command
from genlib.tracking import Tracker

pytestmark = pytest.mark.integration

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@contextlib.contextmanager
def mlflow_server(log: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with open(log, "w") as out:
        proc = subprocess.Popen(server_command("127.0.0.1", port, workers=1), stdout=out, stderr=subprocess.STDOUT)
        url, deadline = f"http://127.0.0.1:{port}", time.time() + 90
        try:
            while True:
                try:
                    urllib.request.urlopen(f"{url}/health", timeout=2).close()
                    break
                except OSError:
                    if proc.poll() is not None or time.time() > deadline:
                        raise RuntimeError(f"mlflow server did not start: {log.read_text()[-2000:]}")
                    time.sleep(0.5)
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=30)


@contextlib.contextmanager
def chromium():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert CHROMIUM and CHROMEDRIVER, ("the browser test needs Debian's chromium and chromium-driver: "
                                       "`make browser` (or apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _wait_for_text(driver, text: str, timeout: float = 60) -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(lambda d: text in d.find_element(By.TAG_NAME, "body").text,
                                         f"{text!r} never appeared on {driver.current_url}")
    return driver.find_element(By.TAG_NAME, "body").text


def test_mlflow_ui_lists_the_run_shows_its_metrics_and_renders_the_report(pipeline_store, monkeypatch, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    monkeypatch.setenv("GENLIB_HOME", str(pipeline_store.home))
    shots = Path(os.environ.get("GENLIB_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    tracker = Tracker()
    experiment = tracker.client.get_experiment_by_name("genlib-digits").experiment_id
    runs = {r.info.run_name: r for r in tracker.client.search_runs([experiment])}
    parent, scored = runs["pipeline-digits-quick"], runs["evaluate-vae"]

    with mlflow_server(tmp_path / "mlflow.log") as url, chromium() as driver:
        driver.get(f"{url}/#/experiments")  # as a person starts: the list of experiments
        _wait_for_text(driver, "genlib-digits")
        # MLflow 3 opens on its GenAI view; a person training models switches to "Model training".
        driver.find_element(By.XPATH, "//*[normalize-space(text())='Model training']").click()
        driver.find_element(By.LINK_TEXT, "genlib-digits").click()
        page = _wait_for_text(driver, "pipeline-digits-quick")  # the runs table lists the pipeline
        driver.save_screenshot(str(shots / "1-runs.png"))
        assert "Runs" in page

        driver.get(f"{url}/#/experiments/{experiment}/runs/{scored.info.run_id}")
        page = _wait_for_text(driver, "fid_domain")  # the evaluate run shows its metrics
        for name in ("test_elbo_bpd", "test_iwae8_bpd", "kid_domain", "copy_rate_pixel", "precision_domain"):
            assert name in page
        driver.save_screenshot(str(shots / "2-metrics.png"))

        driver.get(f"{url}/#/experiments/{experiment}/runs/{parent.info.run_id}/artifacts/report.html")
        frame = WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.TAG_NAME, "iframe"))[0]
        driver.switch_to.frame(frame)
        _wait_for_text(driver, "genlib pipeline digits-quick")
        images = driver.find_elements(By.TAG_NAME, "img")
        assert len(images) >= 5  # samples of both models, interpolations, traversals, closest pairs
        assert all(driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img)
                   for img in images), "an image of the report did not render"
        assert "fid_domain" in driver.find_element(By.TAG_NAME, "body").text
        driver.switch_to.default_content()
        driver.save_screenshot(str(shots / "3-report.png"))
    assert all((shots / name).stat().st_size > 10_000 for name in ("1-runs.png", "2-metrics.png", "3-report.png"))
