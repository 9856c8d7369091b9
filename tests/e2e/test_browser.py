"""In a real browser: Debian's headless Chromium, driven by Playwright, against `make run`'s demo, following the
README's walk-through. The job, the sensors and the drift schedule are listed; the asset graph shows the accounts
and their units; a run launched from the Launchpad by a pull request's number alone (the config's descriptions
shown, Launch clicked) plans it, and the Runs page filters by that pull request; a branch pushed to the demo
remote gets a plan run from the sensor, with its report; its merge is applied and the units' assets show the
materialization with its resource changes as a table; a unit changed behind Terraform's back fails its drift
check (run from the asset page), Materialize applies it and the check passes again. Screenshots go to
$PIPELINES_SCREENSHOTS_DIR (`make screenshots` sets it to docs/), else to the test's temporary folder.

Waits are on UI text and elements (GraphQL only finds the runs the sensors start), with generous bounds."""

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from pipelines_dagster.demo import layout
from pipelines_dagster.demo.aws import REGION, Aws, backend_config_args
from pipelines_dagster.demo.run import create
from pipelines_dagster.demo.terraform import terraform_binary
from tests.dagsterui import CHROMIUM, RUNS, chromium_page, free_port, run_logs, running_demo

JOB = "infrastructure_plan"
SENSORS = ("pull_request_sensor", "deploy_branch_sensor", "run_failure_sensor", "asset_graph_sensor")
SCHEDULE = "drift_schedule"
BRANCH = "more-apps"
PR, PR_BRANCH = 1, "bigger-apps"  # a pull request of the demo remote: its head as refs/pull/1/head, as GitHub has
APPS = [unit for unit, component in layout.UNITS.items() if component == "app"]
DRIFTED = "dev/us-east-1/dev/app"
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
    """The demo, with a branch pushed to its remote before it starts (the README's step 2), and a pull request
    (step 5)."""
    folder = tmp_path / "demo"
    work = create(folder).work

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=work, check=True, capture_output=True)

    git("checkout", "-q", "-b", BRANCH)
    app = work / "_envcommon" / "app.hcl"
    app.write_text(app.read_text().replace('instances = "2"', 'instances = "3"'))
    git("commit", "-qam", "Three app instances")
    git("push", "-q", "origin", BRANCH)
    git("checkout", "-q", "-b", PR_BRANCH, "main")  # the README's step 5, done before the start
    app.write_text(app.read_text().replace('"small"', '"medium"'))
    git("commit", "-qam", "Bigger apps")
    git("push", "-q", "origin", f"{PR_BRANCH}:refs/pull/{PR}/head")
    git("checkout", "-q", "main")
    main = subprocess.run(["git", "rev-parse", "main"], cwd=work, check=True, capture_output=True,
                          text=True).stdout.strip()
    with running_demo(folder, free_port(), tmp_path / "demo.log", START_S) as state:
        yield {**state, "work": work, "main": main, "folder": folder}
    assert state["left_running"] == [], state["left_running"]


@pytest.fixture
def page(tmp_path):
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make system-packages` installs Debian's chromium")
    from playwright.sync_api import expect

    expect.set_options(timeout=UI_TIMEOUT_MS)
    with chromium_page(tmp_path / "chromium-profile") as page:
        page.set_default_timeout(UI_TIMEOUT_MS)
        yield page


def _link(page, text: str):
    """A link by a word of its text (Dagster puts an icon's name before it, and a description after it)."""
    return page.get_by_role("link", name=re.compile(rf"(^|\s){re.escape(text)}(\s|$)"))


def _wait_for_finish(page, graphql, run_id: str) -> None:
    from playwright.sync_api import expect

    status = page.get_by_text(FINISHED).first
    expect(status).to_be_visible(timeout=RUN_TIMEOUT_MS)
    assert status.inner_text() == "Success", f"run {run_id}:\n{run_logs(graphql, run_id)}"


def _report(page):
    """The report step's markdown metadata, opened in its dialog."""
    page.get_by_text("[Show Markdown]").first.click()
    return page.get_by_role("dialog")


def _sensor_run_id(graphql, sensor: str) -> str:
    """The first run the sensor starts (polled over GraphQL: the runs list is no place to wait on)."""
    deadline = time.monotonic() + RUN_TIMEOUT_MS / 1000
    tag = {"tags": [{"key": "dagster/sensor_name", "value": sensor}]}
    while time.monotonic() < deadline:
        runs = graphql(RUNS, {"filter": tag})["runsOrError"]["results"]
        if runs:
            return runs[-1]["runId"]
        time.sleep(1)
    pytest.fail(f"{sensor} started no run")


def _git(work: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=work, check=True, capture_output=True)


def _forget(demo: dict, unit: str, address: str, scratch: Path) -> None:
    """Someone with the account's credentials removes a resource from the unit's state, behind Terraform's back
    (in a checkout of their own, through the demo's AWS emulator)."""
    checkout = scratch / "by-hand"
    _git(scratch, "clone", "-q", str(demo["folder"] / "remote.git"), str(checkout))
    endpoint = f"http://127.0.0.1:{demo['aws_port']}"
    creds = Aws(endpoint).assume(layout.ACCOUNTS[unit.split("/")[0]], role="someone")
    env = {"PATH": "/usr/bin:/bin", "TF_CLI_CONFIG_FILE": str(demo["folder"] / "terraformrc"),
           "TF_CLI_ARGS_init": backend_config_args(endpoint), "AWS_REGION": REGION,
           "AWS_ACCESS_KEY_ID": creds["aws_access_key_id"], "AWS_SECRET_ACCESS_KEY": creds["aws_secret_access_key"],
           "AWS_SESSION_TOKEN": creds["aws_session_token"]}
    for args in (["init", "-input=false", f"-plugin-dir={demo['folder'] / 'plugins'}"], ["state", "rm", address]):
        subprocess.run([terraform_binary(), *args], cwd=checkout / unit, env=env, check=True, capture_output=True,
                       timeout=120)


def _type_config(page, text: str) -> None:
    """The run config typed into the Launchpad's editor (again, when a dialog took the keys)."""
    editor = page.locator(".CodeMirror").first
    for _ in range(3):
        editor.click()
        page.keyboard.press("Control+A")
        page.keyboard.press("Delete")
        page.keyboard.insert_text(text)
        lines = [line.replace("\u200b", "").rstrip() for line in editor.locator(".CodeMirror-line").all_inner_texts()]
        if "\n".join(lines).strip() == text.strip():  # (CodeMirror shows an empty line as a zero-width space)
            return
    pytest.fail(f"the Launchpad's editor holds {lines!r}")


def _run_launched_by(page, url: str, graphql, button: str) -> str:
    """Clicks the page's `button`, follows the run it launches (the "Launched run" toast's link) to its end on the
    run's page; the run's id."""
    page.get_by_role("button").filter(has_text=re.compile(rf"^{button}$")).click()
    link = page.locator('a[href^="/runs/"]').filter(has_text="View").first
    link.wait_for()
    run_id = link.get_attribute("href").rsplit("/", 1)[-1]
    page.goto(f"{url}/runs/{run_id}")
    _wait_for_finish(page, graphql, run_id)
    return run_id


def _checks_tab(page, url: str, unit: str) -> None:
    page.goto(f"{url}/assets/units/{unit}?view=checks")


def test_the_readme_walk_through_in_a_browser(demo, page, shots, tmp_path):
    from playwright.sync_api import expect

    demo = {**demo, "scratch": tmp_path}
    url, graphql, location = demo["url"], demo["graphql"], demo["location"]["name"]

    # the branch pushed before the start gets a plan run from the sensor; once it has, merge it (the runs go on
    # while the test looks at the rest)
    plan_run = _sensor_run_id(graphql, "pull_request_sensor")
    _git(demo["work"], "merge", "-q", "--no-ff", BRANCH, "-m", f"Merge {BRANCH}")
    _git(demo["work"], "push", "-q", "origin", "main")
    merge = subprocess.run(["git", "rev-parse", "main"], cwd=demo["work"], check=True, capture_output=True,
                           text=True).stdout.strip()

    page.goto(f"{url}/jobs")
    expect(_link(page, JOB)).to_be_visible()
    page.goto(f"{url}/automation")
    for name in (*SENSORS, SCHEDULE):
        expect(_link(page, name)).to_be_visible()
    page.screenshot(path=shots / "automation.png")

    # the asset graph: one group per account, holding the account and its units
    page.goto(f"{url}/asset-groups")
    for account in layout.ACCOUNTS:
        expect(page.get_by_text(account, exact=True).first).to_be_visible()
    for account in layout.ACCOUNTS:
        page.goto(f"{url}/locations/{location}/asset-groups/{account}")
        for name in [account] + [u.rsplit("/", 1)[-1] for u in layout.UNITS if u.startswith(f"{account}/")]:
            expect(page.get_by_text(name, exact=True).first).to_be_visible()

    # the Launchpad: a pull request by its number alone, each field's description shown on the config, then Launch
    page.goto(f"{url}/locations/{location}/jobs/{JOB}/playground")
    _type_config(page, f"ops:\n  orchestrate:\n    config:\n      pr_number: {PR}\n")
    page.locator(".CodeMirror").get_by_text("pr_number").click()
    expect(page.get_by_text(re.compile(r"^The pull request\. Alone it is enough: its head")).first).to_be_visible()
    launch = page.get_by_role("button", name="Launch Run")
    expect(launch).to_be_enabled()
    page.screenshot(path=shots / "launchpad.png")
    launch.click()
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}$"))
    launched = page.url.rsplit("/", 1)[-1]

    page.goto(f"{url}/runs/{plan_run}")
    _wait_for_finish(page, graphql, plan_run)
    report = _report(page)
    expect(report).to_contain_text("pipelines-dagster plan: succeeded")
    for unit in APPS:
        expect(report.get_by_text(unit, exact=True)).to_be_visible()
    expect(report.get_by_text("EnvCommonChanged", exact=True)).to_have_count(len(APPS))
    expect(report.get_by_text(re.compile(r"^1 to add, 0 to change, 0 to destroy(, \d+ output changes?)?$"))
           ).to_have_count(len(APPS))
    page.screenshot(path=shots / "plan-report.png")
    page.keyboard.press("Escape")

    # the merge: applied by the deploy-branch sensor, and the apps' assets materialized by that run
    apply_run = _sensor_run_id(graphql, "deploy_branch_sensor")
    page.goto(f"{url}/runs/{apply_run}")
    _wait_for_finish(page, graphql, apply_run)
    report = _report(page)
    expect(report).to_contain_text("pipelines-dagster apply: succeeded")
    expect(report.get_by_text("apply", exact=True)).to_have_count(len(APPS))
    page.keyboard.press("Escape")
    for unit in APPS:  # each app's latest materialization: the apply run, for the merge commit, and its resources
        page.goto(f"{url}/assets/units/{unit}")
        expect(page.locator(f'a[href^="/runs/{apply_run}"]').first).to_be_visible()
        expect(page.get_by_role("cell", name=merge, exact=True).first).to_be_visible()
        resources = page.get_by_role("row").filter(has=page.get_by_text("resource_changes", exact=True)).first
        resources.scroll_into_view_if_needed()
        expect(resources.get_by_role("cell", name="null_resource.app[2]", exact=True)).to_be_visible()
        expect(resources.get_by_role("cell", name="create", exact=True)).to_be_visible()
    page.screenshot(path=shots / "asset.png")
    page.goto(f"{url}/locations/{location}/asset-groups/dev")
    expect(page.get_by_text("Materialized", exact=True)).to_have_count(len(
        [u for u in layout.UNITS if u.startswith("dev/")]))
    page.screenshot(path=shots / "asset-graph.png")

    page.goto(f"{url}/runs/{launched}")
    _wait_for_finish(page, graphql, launched)
    page.screenshot(path=shots / "launched-run.png")
    report = _report(page)
    expect(report).to_contain_text("pipelines-dagster plan: succeeded")
    expect(report.get_by_text("EnvCommonChanged", exact=True)).to_have_count(len(APPS))
    page.keyboard.press("Escape")

    # the Runs page: every run, and the runs of the pull request (its tag)
    page.goto(f"{url}/runs")
    for run in (plan_run, launched, apply_run):
        expect(_link(page, run[:8])).to_be_visible()
    page.goto(f"{url}/runs?q%5B0%5D=tag%3Apipelines%2Fpr%3D{PR}")
    expect(_link(page, launched[:8])).to_be_visible()
    expect(page.get_by_text("pipelines/account-dev: true").first).to_be_visible()
    expect(_link(page, apply_run[:8])).to_have_count(0)
    page.screenshot(path=shots / "runs.png")

    # drift: a resource of the dev app removed from its state by hand; its check, run from the asset page, fails
    _forget(demo, DRIFTED, "null_resource.app[0]", demo["scratch"])
    _checks_tab(page, url, DRIFTED)
    _run_launched_by(page, url, graphql, "Execute")
    _checks_tab(page, url, DRIFTED)
    expect(page.get_by_text("drifted: 1 to add, 0 to change, 0 to destroy", exact=True)).to_be_visible()
    expect(page.get_by_role("cell", name="null_resource.app[0]", exact=True).first).to_be_visible()
    page.screenshot(path=shots / "drift-check.png")

    # Materialize: the unit applied at the deploy-branch tip, its drift check (in the same run) passes again
    reconcile_run = _run_launched_by(page, url, graphql, "Materialize")
    _checks_tab(page, url, DRIFTED)
    expect(page.get_by_text("the plan is empty", exact=True)).to_be_visible()
    expect(page.get_by_text("Passed", exact=True).first).to_be_visible()
    page.screenshot(path=shots / "drift-reconciled.png")
    page.goto(f"{url}/assets/units/{DRIFTED}")
    expect(page.locator(f'a[href^="/runs/{reconcile_run}"]').first).to_be_visible()
    resources = page.get_by_role("row").filter(has=page.get_by_text("resource_changes", exact=True)).first
    resources.scroll_into_view_if_needed()
    expect(resources.get_by_role("cell", name="null_resource.app[0]", exact=True)).to_be_visible()
