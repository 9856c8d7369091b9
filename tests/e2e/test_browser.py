"""In a real browser: Debian's headless Chromium, driven by Playwright, against `make run`'s demo. The job and the
sensors are listed; a branch pushed to the demo remote gets a plan run from the sensor, with its report; a run
launched from the Launchpad (config typed into the editor, Launch clicked) succeeds. Screenshots go to
$PIPELINES_SCREENSHOTS_DIR (`make screenshots` sets it to docs/), else to the test's temporary folder.

Waits are on UI text and elements, with generous bounds; nothing sleeps."""

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from pipelines_dagster.demo import layout
from pipelines_dagster.demo.run import create
from tests.dagsterui import RUNS, free_port, run_logs, running_demo

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
JOB = "infrastructure_pipeline"
SENSORS = ("pull_request_sensor", "deploy_branch_sensor", "run_failure_sensor")
BRANCH = "more-apps"
APPS = [unit for unit, component in layout.UNITS.items() if component == "app"]
START_S = 240  # first start: the initial apply (about 30 s here) and dagster dev (about 20 s)
UI_TIMEOUT_MS = 30_000
RUN_TIMEOUT_MS = 150_000
FINISHED = re.compile(r"^(Success|Failure|Canceled)$")


@pytest.fixture
def shots(tmp_path) -> Path:
    folder = Path(os.environ.get("PIPELINES_SCREENSHOTS_DIR") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def demo(tmp_path):
    """The demo, with a branch pushed to its remote before it starts (the README's first step)."""
    folder = tmp_path / "demo"
    work = create(folder).work

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=work, check=True, capture_output=True)

    git("checkout", "-q", "-b", BRANCH)
    app = work / "_envcommon" / "app.hcl"
    app.write_text(app.read_text().replace('instances = "2"', 'instances = "3"'))
    git("commit", "-qam", "Three app instances")
    git("push", "-q", "origin", BRANCH)
    git("checkout", "-q", "main")
    with running_demo(folder, free_port(), tmp_path / "demo.log", START_S) as state:
        yield state
    assert state["left_running"] == [], state["left_running"]


@pytest.fixture
def page(tmp_path):
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make system-packages` installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1440, "height": 900})
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(UI_TIMEOUT_MS)
            # Dagster asks a new browser once to join its community: decline whenever it shows up
            page.add_locator_handler(page.get_by_text("Join the Dagster community"),
                                     lambda: page.get_by_role("button", name="Skip").click())
            yield page
        finally:
            context.close()


def _link(page, text: str):
    """A link by its text (Dagster puts an icon's name before it in the accessible name)."""
    return page.get_by_role("link", name=re.compile(rf"(^|\s){re.escape(text)}$"))


def _wait_for_finish(page, graphql, run_id: str) -> None:
    from playwright.sync_api import expect

    status = page.get_by_text(FINISHED).first
    expect(status).to_be_visible(timeout=RUN_TIMEOUT_MS)
    assert status.inner_text() == "Success", f"run {run_id}:\n{run_logs(graphql, run_id)}"


def _report(page):
    """The report step's markdown metadata, opened in its dialog."""
    page.get_by_text("[Show Markdown]").first.click()
    return page.get_by_role("dialog")


def _sensor_run_id(graphql, deadline: float) -> str:
    tag = {"tags": [{"key": "dagster/sensor_name", "value": "pull_request_sensor"}]}
    while time.monotonic() < deadline:
        runs = graphql(RUNS, {"filter": tag})["runsOrError"]["results"]
        if runs:
            return runs[0]["runId"]
        time.sleep(1)
    pytest.fail(f"the pull-request sensor started no run for branch {BRANCH}")


def test_ui_lists_the_job_and_sensors_shows_a_sensor_plan_and_runs_the_job_from_the_launchpad(demo, page, shots):
    from playwright.sync_api import expect

    url, graphql = demo["url"], demo["graphql"]

    page.goto(f"{url}/jobs")
    expect(_link(page, JOB)).to_be_visible()
    page.goto(f"{url}/automation")
    for sensor in SENSORS:
        expect(_link(page, sensor)).to_be_visible()
    page.screenshot(path=shots / "automation.png")

    # the Launchpad: config typed into the editor for two refs, then Launch (it runs while we look on)
    page.goto(f"{url}/locations/{demo['location']['name']}/jobs/{JOB}/playground")
    page.locator(".CodeMirror").first.click()
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    page.keyboard.insert_text(f"ops:\n  orchestrate:\n    config:\n      event: pull_request\n"
                              f"      base_ref: main\n      head_ref: {BRANCH}\n")
    launch = page.get_by_role("button", name="Launch Run")
    expect(launch).to_be_enabled()
    page.screenshot(path=shots / "launchpad.png")
    launch.click()
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}$"))
    launched = page.url.rsplit("/", 1)[-1]

    # the branch pushed before the start: a plan run started by the sensor, and its report
    run_id = _sensor_run_id(graphql, time.monotonic() + RUN_TIMEOUT_MS / 1000)
    page.goto(f"{url}/runs/{run_id}")
    _wait_for_finish(page, graphql, run_id)
    report = _report(page)
    expect(report).to_contain_text("pipelines-dagster plan: succeeded")
    for unit in APPS:
        expect(report.get_by_text(unit, exact=True)).to_be_visible()
    expect(report.get_by_text("EnvCommonChanged", exact=True)).to_have_count(len(APPS))
    expect(report.get_by_text("1 to add, 0 to change, 0 to destroy", exact=True)).to_have_count(len(APPS))
    page.screenshot(path=shots / "plan-report.png")
    page.keyboard.press("Escape")

    # the launched run
    page.goto(f"{url}/runs/{launched}")
    assert launched != run_id
    _wait_for_finish(page, graphql, launched)
    page.screenshot(path=shots / "launched-run.png")
    expect(_report(page).get_by_text("EnvCommonChanged", exact=True)).to_have_count(len(APPS))
    page.keyboard.press("Escape")

    page.goto(f"{url}/runs")
    for run in (run_id, launched):
        expect(_link(page, run[:8])).to_be_visible()
    expect(_link(page, "pull_request_sensor")).to_be_visible()
    page.screenshot(path=shots / "runs.png")
