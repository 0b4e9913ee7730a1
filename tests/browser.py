"Headless Chromium for the browser tests (the docs site, the leaderboard's page)."
import shutil

import pytest


def chrome():
    "Headless Debian Chromium through Selenium, or a skip that says what is missing."
    try: from selenium import webdriver
    except ImportError: pytest.skip("selenium is not installed (pip install selenium)")
    browser, driver = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
    if not (browser and driver): pytest.skip("Debian's chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    o = Options(); o.binary_location = browser
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"): o.add_argument(a)
    return webdriver.Chrome(service=Service(driver), options=o)
