"""The apply role is decided by the commit a unit is checked out at, for every action: a destroy runs at the base,
so its base must be a commit of the deploy branch (its first-parent line) too. Real git, Terraform and the AWS
emulator."""

import uuid

from pipelines_dagster.core.model import Status
from tests.conftest import ACCOUNTS, null_unit
from tests.core.test_engine import request


def test_a_destroy_gets_the_apply_role_only_when_its_base_is_a_deploy_branch_commit(repo, aws, make_executor):
    unit = f"dev/victim-{uuid.uuid4().hex[:6]}"
    repo.git("checkout", "-q", "-b", "side")
    side = repo.commit({f"{unit}/main.tf": null_unit(aws.endpoint, unit)}, "a unit only a branch has")
    repo.git("checkout", "-q", "main")
    head = repo.commit({"README.md": "on main\n"})
    executor = make_executor()

    refused = executor.execute(request(unit, "destroy", head, base=side))

    assert refused.status is Status.FAILED and refused.commit == side
    assert f"refusing to assume the apply role of account 'dev': commit {side[:12]} is not on the deploy branch" \
        in refused.message
    assert refused.role_arn is None


def test_a_merged_branchs_own_commit_is_not_a_deploy_branch_commit(repo, aws, make_executor):
    unit = f"dev/merged-{uuid.uuid4().hex[:6]}"
    repo.git("checkout", "-q", "-b", "feature")
    feature = repo.commit({f"{unit}/main.tf": null_unit(aws.endpoint, unit)}, "feature work")
    repo.git("checkout", "-q", "main")
    repo.git("merge", "-q", "--no-ff", "feature", "-m", "merge feature")
    merge = repo.git("rev-parse", "HEAD")
    executor = make_executor()

    assert executor.on_deploy_branch(merge) and not executor.on_deploy_branch(feature)
    refused = executor.execute(request(unit, "apply", feature))
    assert refused.status is Status.FAILED and "refusing to assume the apply role" in refused.message
    applied = executor.execute(request(unit, "apply", merge))
    assert applied.status is Status.SUCCEEDED, applied.message + applied.output
    assert applied.role_arn == f"arn:aws:iam::{ACCOUNTS['dev']}:role/pipelines-apply"
