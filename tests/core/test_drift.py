"""Drift findings and the drift issue's text (pure functions of the findings)."""

from pipelines_dagster.core.drift import (
    CLEAN,
    DRIFTED,
    UNCHECKED,
    Finding,
    finding,
    matches,
    open_findings,
)
from pipelines_dagster.core.model import PlanSummary, ResourceChange, Result, Status
from pipelines_dagster.core.render import drift_issue_body as issue_body
from pipelines_dagster.core.render import drift_issue_title as issue_title
from pipelines_dagster.core.render import fingerprint

SHA = "0123456789abcdef0123456789abcdef01234567"


def drifted(unit: str, add: int = 1, message: str = "") -> Finding:
    return Finding(unit=unit, state=DRIFTED, account="dev", commit=SHA, summary=PlanSummary(add=add),
                   resources=[create(f"null_resource.item[{i}]") for i in range(add)], message=message)


def create(address: str) -> ResourceChange:
    return ResourceChange(address=address, action="create", actions=["create"])


def test_results_become_findings():
    summary = PlanSummary(add=1, resources=[{"address": "null_resource.x", "action": "create",
                                             "actions": ["create"]}])
    assert finding("u", "dev", SHA, Result(status=Status.NO_CHANGES, exit_code=0)).state == CLEAN
    diff = finding("u", "dev", SHA, Result(status=Status.SUCCEEDED, exit_code=2, summary=summary))
    assert (diff.state, diff.summary.line(), diff.resources) == (
        DRIFTED, "1 to add, 0 to change, 0 to destroy", [create("null_resource.x")])
    failed = finding("u", "dev", SHA, Result(status=Status.STATE_LOCKED, exit_code=1, message="the state is locked"))
    assert (failed.state, failed.passed, failed.message) == (UNCHECKED, False, "the state is locked")


def test_metadata_round_trip():
    original = drifted("dev/a", add=2, message="Plan: 2 to add")
    rows = [{"address": r.address, "action": r.action} for r in original.resources]  # the check's table
    assert Finding.from_metadata("dev/a", original.to_metadata(), rows) == original


def test_path_filter():
    assert matches("dev/us-east-1/app", [])
    assert matches("dev/us-east-1/app", ["dev"]) and matches("dev/us-east-1/app", ["dev/*/app"])
    assert not matches("prod/us-east-1/app", ["dev", "*/eu-west-1/*"])


def test_fingerprint_follows_the_list_and_the_plans_not_the_messages():
    base = [drifted("dev/a"), Finding(unit="dev/b", state=UNCHECKED, message="lock held by alice")]
    assert fingerprint(base) == fingerprint([drifted("dev/a", message="other"),
                                             Finding(unit="dev/b", state=UNCHECKED, message="lock held by bob")])
    assert fingerprint(base) != fingerprint([drifted("dev/a", add=2), base[1]])
    assert fingerprint(base) != fingerprint(base[:1])
    listed = open_findings({f.unit: f for f in base + [Finding(unit="dev/c", state=CLEAN)]})
    assert [f.unit for f in listed] == ["dev/a", "dev/b"]
    assert issue_title(listed) == "pipelines-dagster: drift: 1 unit drifted, 1 unit could not be checked"


def test_issue_body_fits_githubs_limit_with_thousands_of_units():
    listed = [drifted(f"dev/unit-{i:05d}", add=3) for i in range(5000)]
    body = issue_body(listed, deploy_branch="main", commit=SHA, run_url="http://ui/runs/1", limit=65000)
    assert len(body) <= 65000 and "`dev/unit-00000`" in body and "`dev/unit-04999`" not in body
    shown = body.count("| `dev/unit-")
    assert f"… and {5000 - shown} more unit(s)" in body
    small = issue_body(listed[:2], deploy_branch="main", commit=SHA, run_url=None, limit=65000)
    assert small.count("<details>") == 2 and "`null_resource.item[2]`: create" in small
