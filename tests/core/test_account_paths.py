"""Account fields that become paths or file contents are validated; a baseline never writes outside its clone."""

import os

import pytest

from pipelines_dagster.core.account_factory import BaselineError, _write_inside, baseline_files
from pipelines_dagster.core.repo_files import Account, load_accounts


@pytest.mark.parametrize("field, value", [("region", "../../../../tmp/escape"), ("region", "us-east-1/../x"),
                                          ("email", 'a@b.c"\nresource "null_resource" "x" {}'),
                                          ("email", "${file(\"/etc/passwd\")}@x.y")])
def test_account_fields_that_become_paths_or_hcl_are_validated(field, value):
    text = f'evil:\n  id: "123456789012"\n  email: ok@example.com\n  {field}: {value!r}\n'
    accounts, problems = load_accounts(text, "accounts.yml")
    assert "evil" not in accounts.entries
    assert problems and problems[0].file == "accounts.yml" and problems[0].line == 1
    assert f"{field} " in problems[0].message and "evil" in problems[0].message


def test_a_valid_region_is_used_in_the_baseline(tmp_path):
    files = baseline_files(tmp_path, "newacct", Account(id="123456789012", email="n@example.com",
                                                         region="eu-west-3"))
    assert "newacct/eu-west-3/region.hcl" in files


def test_templates_that_are_symlinks_are_refused(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET")
    templates = tmp_path / "clone" / "_templates" / "account-baseline"
    templates.mkdir(parents=True)
    (templates / "{{account_name}}").mkdir()
    os.symlink(secret, templates / "{{account_name}}" / "leak.txt")
    with pytest.raises(BaselineError, match="leak.txt is a symlink"):
        baseline_files(tmp_path / "clone", "newacct", Account(id="123456789012", email="n@example.com"))


def test_a_baseline_is_not_written_through_a_symlink_of_the_repository(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    clone = tmp_path / "clone"
    clone.mkdir()
    os.symlink(outside, clone / "newacct")
    with pytest.raises(BaselineError, match="newacct is a symlink"):
        _write_inside(clone, "newacct/account.hcl", "locals {}\n")
    assert list(outside.iterdir()) == []
