"""Every renderer besides the PR comment (drift issue, crash report, fork comment, baseline pull request, the
failure issue as written to GitHub): hostile repository text renders as itself on GitHub (rendered with cmark-gfm,
tests/gfm.py)."""

from types import SimpleNamespace

import pytest

from pipelines_dagster.core import account_factory, drift, render, run_requests
from pipelines_dagster.core.github_updater import Updater
from pipelines_dagster.core.model import InfraChange, Outcome, Plan, PlanSummary, ResourceChange, RunSpec, Status
from pipelines_dagster.core.repo_files import Account
from pipelines_dagster.core.reporter import Reporter
from pipelines_dagster.integrations.github import GitHubClient
from pipelines_dagster.redact import Redactor
from tests.fakes.github_fake import github_fake_fixture
from tests.gfm import github, visible

EVIL_UNIT = "dev/`x`</code></summary></details><h3>owned</h3><img src=https://evil.example/i.png>/@alice|#1"
EVIL_TEXT = "Error: [log in](https://evil.example) www.evil.example @acme/admins #12 <b>bold</b> **x**"
RUN_URL = "http://ui.example/runs/abc"
SHA = "0123456789abcdef0123456789abcdef01234567"
REPO = "acme/infrastructure-live"


def assert_inert(markdown: str, *, links: list[str], shown: list[str], tags: set[str]):
    rendered = github(markdown)
    assert rendered.links == links, rendered.html
    assert rendered.mentions == [] and rendered.references == [], rendered.html
    assert set(rendered.tags) <= tags, rendered.html
    for text in shown:
        assert text in visible(rendered.text), (text, rendered.html)
    return rendered


def test_drift_issue():
    evil = 'null_resource.x["</details>`@bob`"]'
    listed = [drift.Finding(unit=EVIL_UNIT, state=drift.DRIFTED, account="@mallory|x", commit=SHA,
                            summary=PlanSummary(add=1),
                            resources=[ResourceChange(address=evil, action="create", actions=["create"])]),
              drift.Finding(unit="dev/b", state=drift.UNCHECKED, account="dev", commit=SHA, message=EVIL_TEXT)]
    body = render.drift_issue_body(listed, deploy_branch="main`<b>x</b>`", commit=SHA, run_url=RUN_URL, limit=65000)
    rendered = assert_inert(body, links=[RUN_URL], tags={"p", "code", "a", "h3", "table", "thead", "tbody", "tr",
                                                         "th", "td", "details", "summary", "ul", "li"},
                            shown=[EVIL_UNIT, EVIL_TEXT, "@mallory|x", f"{evil}: create",
                                   "main`<b>x</b>`"])
    assert rendered.tags.count("h3") == 2 and rendered.tags.count("details") == 1 and "img" not in rendered.tags
    assert body.count("\n| ") == 4  # two header rows and one row per table: the pipes in the text add none


def test_crash_report_and_fork_comment():
    output = "Traceback\n````\n</details><img src=x>\n@bob #3 https://evil.example"
    body = render.crash_report(run_id="abcdef12-run", run_url=RUN_URL, errors=[("orchestrate <b>", output)],
                               target=run_requests.CrashTarget(event="push", pr=None, sha=SHA), redact=Redactor())
    rendered = assert_inert(body, links=[RUN_URL], tags={"h3", "p", "code", "a", "strong", "pre"},
                            shown=[output, "orchestrate <b>"])
    assert rendered.tags.count("pre") == 1

    pr = SimpleNamespace(head_sha=SHA, head_repo="mallory/@admins<img src=x>")
    assert_inert(render.fork_comment(pr), links=[], tags={"h3", "p", "code"}, shown=["mallory/@admins<img src=x>"])


def test_baseline_pull_request_body():
    files = ["sandbox/account.hcl", "sandbox/`x`/<img src=x>.hcl", "modules/@bob/#4.tf"]
    body = account_factory.pull_request_body("sand*box @alice", Account(id="123456789012"), files)
    rendered = assert_inert(body, links=[], tags={"p", "strong", "code", "ul", "li"},
                            shown=["sand*box @alice"] + files)
    assert rendered.tags.count("li") == 3
    assert "- `sandbox/account.hcl`" in body  # ordinary paths read as paths


github_fake = pytest.fixture(github_fake_fixture, name="github_fake")


def test_the_failure_issue_of_a_push_through_github(github_fake):
    """The reporter's issue for a failed apply, written through the client to the GitHub fake: a one-line title,
    and a body in which the hostile unit and its output are text."""
    unit = "prod/evil\n# <img src=x> @alice"
    change = InfraChange(type="ModuleChanged", unit=unit, account="prod", action="apply")
    outcomes = [Outcome.note(change, Status.FAILED, output="Error: </details><h3>Apply complete!</h3>\n```")]
    github_fake.add_commit(REPO, SHA)
    client = GitHubClient(REPO, token=github_fake.token, base_url=github_fake.url, seconds_between_requests=0,
                          seconds_between_writes=0)
    spec = RunSpec(event="push", base=SHA, head=SHA)
    updater = Updater(client)
    Reporter(updater, spec, RUN_URL).finished(Plan(spec=spec, changes=[change]), outcomes)
    assert updater.problems == []
    [issue] = github_fake.issues(REPO)
    assert issue["title"] == f"pipelines-dagster: apply failed for {SHA[:12]}: prod/evil # <img src=x> @alice"
    body = issue["body"].split("\n", 1)[1]  # after the marker line
    assert_inert(body, links=[RUN_URL], tags={"h3", "p", "code", "a", "table", "thead", "tbody", "tr", "th", "td",
                                              "details", "summary", "pre"},
                 shown=["prod/evil # <img src=x> @alice", "Error: </details><h3>Apply complete!</h3>\n```"])
