"""The SDE web page in headless Chromium: an output checker logs in, sees the disclosure-control
result beside the table of a release request, and approves it."""

from __future__ import annotations

import shutil
import threading
import time

import httpx
import pytest
import uvicorn
from sde_support import PASSWORD, free_port, login, populate, wait_for

from farr.sde.app import bootstrap_user, create_app
from farr.simulate.simulator import simulate_dataset

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The service on a free loopback port in a thread, with one request awaiting review."""
    if not (shutil.which(CHROMIUM) and shutil.which(DRIVER)):
        pytest.skip("chromium and chromedriver not installed (apt-get install chromium chromium-driver)")
    root = tmp_path_factory.mktemp("sde-web")
    data = simulate_dataset(root / "one", 300, seed=1, workers=1, progress=False)
    bootstrap_user(None, root / "ws", "admin", PASSWORD, "admin")
    app = create_app(None, root / "ws", job_threads=1)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=base, timeout=30) as client:
        for _ in range(100):
            if server.started:
                break
            time.sleep(0.05)
        world = populate(client, {"one": data, "two": data})
        h, asthma = world["headers"], world["projects"]["asthma"]
        job = client.post(f"/projects/{asthma}/jobs", headers=h["res1"], json={
            "operation": "cohort_counts", "dataset": "one", "params": {"by": ["sex"]}}).json()
        job = wait_for(client, job["id"], h["res1"])
        safe = next(f["id"] for f in job["files"] if f["name"] == "counts_sdc.csv")
        number = client.post(f"/projects/{asthma}/requests", headers=h["res1"], json={
            "file_ids": [safe], "justification": "table 1"}).json()["id"]
    yield base, number
    server.should_exit = True
    thread.join(timeout=10)


def test_an_output_checker_reviews_a_request_in_chromium(server):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    base, number = server
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    browser = webdriver.Chrome(options=options, service=Service(DRIVER))
    try:
        browser.get(f"{base}/ui/requests/{number}")
        assert "/ui/login" in browser.current_url  # no cookie: to the login page
        browser.find_element(By.ID, "username").send_keys("check1")
        browser.find_element(By.ID, "password").send_keys(PASSWORD)
        browser.find_element(By.ID, "login").click()
        WebDriverWait(browser, 20).until(lambda b: "asthma" in b.page_source)
        browser.get(f"{base}/ui/requests/{number}")
        page = browser.find_element(By.TAG_NAME, "body").text
        assert "SDC minimum10: passed" in page and "people" in page
        browser.find_element(By.ID, "comment").send_keys("counts look safe")
        browser.find_element(By.ID, "approve").click()
        # Mid-navigation, Chrome may answer for the old page's nodes with a stale-element
        # or an inspector error; both are WebDriverExceptions, so keep polling through them.
        WebDriverWait(browser, 20, ignored_exceptions=(WebDriverException,)).until(
            lambda b: "check1 approve counts look safe" in b.find_element(By.TAG_NAME, "body").text)
        assert browser.find_elements(By.ID, "approve") == []  # one vote per checker
    finally:
        browser.quit()
    with httpx.Client(base_url=base) as client:
        status = client.get(f"/requests/{number}", headers=login(client, "res1")).json()
    assert status["status"] == "submitted" and len(status["reviews"]) == 1
