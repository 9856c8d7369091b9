"""Baseline IaC for a new account: generated from `_templates/account-baseline/` in the repository (or a
built-in default), committed on `pipelines/account-baseline-<name>` with GitPython, pushed, and proposed as one
pull request. Running it again updates the same branch and pull request, and changes nothing when nothing differs.
"""

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from . import markdown as md
from .repo_files import ACCOUNT_NAME_RE, REGION_RE, Account

TEMPLATES = "_templates/account-baseline"
BRANCH_PREFIX = "pipelines/account-baseline-"
DEFAULT_REGION = "us-east-1"
PLACEHOLDERS = ("account_name", "account_id", "email", "region")

_ACCOUNT_HCL = '''locals {{
  account_name = "{account_name}"
  account_id   = "{account_id}"
}}
'''
_REGION_HCL = '''locals {{
  aws_region = "{region}"
}}
'''
_BOOTSTRAP_UNIT = '''\
# The pipeline's identity in account {account_name} ({account_id}): the GitHub OIDC provider, a read-only
# plan role trusted for any ref, and an apply role trusted only for the deploy branch.
terraform {{
  backend "s3" {{}}
}}

module "pipelines_bootstrap" {{
  source        = "../../../modules/pipelines-bootstrap"
  github_repo   = var.github_repo
  deploy_branch = var.deploy_branch
}}

variable "github_repo" {{
  type        = string
  description = "owner/name of the repository whose workflows may assume the roles"
}}

variable "deploy_branch" {{
  type    = string
  default = "main"
}}
'''


def _fill(text: str, values: dict[str, str]) -> str:
    for key in PLACEHOLDERS:
        text = text.replace("{{" + key + "}}", values[key]).replace("{{ " + key + " }}", values[key])
    return text


class BaselineError(Exception):
    """The baseline cannot be generated safely (a template leaves the repository, a value is not a name)."""


def _safe_path(rel: str) -> str:
    """A repository path that stays inside the clone and out of `.git`."""
    parts = PurePosixPath(rel).parts
    if not parts or PurePosixPath(rel).is_absolute() or any(p in ("..", ".", "") for p in parts) or \
            parts[0] == ".git":
        raise BaselineError(f"baseline file {rel!r} would be written outside the repository")
    return "/".join(parts)


def _write_inside(root: Path, rel: str, text: str) -> None:
    """Write a file of the clone, refusing to follow a symlink of the repository out of it."""
    target = root
    for part in PurePosixPath(rel).parts:
        target = target / part
        if target.is_symlink():
            raise BaselineError(f"{rel}: {target.relative_to(root)} is a symlink in the repository; the baseline "
                                "is not written through it")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)


def baseline_files(checkout: Path, name: str, account: Account, region: str | None = None) -> dict[str, str]:
    """Files (repo path -> text) that provision a new account, from the repository's templates or the default.
    BaselineError when a template is a symlink or a path would leave the repository."""
    if not ACCOUNT_NAME_RE.match(name) or name in (".", ".."):
        raise BaselineError(f"account name {name!r} cannot be a folder name")
    values = {"account_name": name, "account_id": account.id, "email": account.email or "",
              "region": region or account.region or DEFAULT_REGION}
    if not REGION_RE.match(values["region"]):
        raise BaselineError(f"region {values['region']!r} is not an AWS region name")
    templates = checkout / TEMPLATES
    if templates.is_symlink():
        raise BaselineError(f"{TEMPLATES} is a symlink: templates must be files of the repository")
    if templates.is_dir():
        files = {}
        for p in sorted(templates.rglob("*")):
            if p.is_symlink():
                raise BaselineError(f"{p.relative_to(checkout)} is a symlink: templates must be files of the "
                                    "repository")
            if p.is_file():
                files[_safe_path(_fill(str(p.relative_to(templates)), values))] = _fill(p.read_text(), values)
        return files
    files = {f"{name}/account.hcl": _ACCOUNT_HCL.format(**values),
             f"{name}/{values['region']}/region.hcl": _REGION_HCL.format(**values),
             f"{name}/_global/pipelines-bootstrap/main.tf": _BOOTSTRAP_UNIT.format(**values)}
    bundled = Path(__file__).resolve().parents[1] / "terraform" / "pipelines-bootstrap"
    if not (checkout / "modules" / "pipelines-bootstrap").exists() and bundled.is_dir():
        for p in sorted(bundled.rglob("*.tf")):
            files[f"modules/pipelines-bootstrap/{p.relative_to(bundled)}"] = p.read_text()
    return files


def pull_request_body(name: str, account: Account, files) -> str:
    """The baseline pull request's markdown: the account's name and the files (from the repository's templates)
    render as text."""
    return (f"Adds the baseline infrastructure for account **{md.text(name)}** ({md.code(account.id)}), added to the "
            "accounts file on the deploy branch.\n\nFiles:\n" + "".join(f"- {md.code(f)}\n" for f in sorted(files))
            + "\nMerging it applies these units with the pipeline's apply role.")


@dataclass
class BaselineResult:
    branch: str
    pushed: bool  # False when the branch already held exactly these files
    files: list[str]
    pull_request: int | None = None
    pull_request_url: str | None = None
    created: bool = False

    def message(self) -> str:
        what = "pushed" if self.pushed else "already up to date"
        text = f"baseline for the account on branch {self.branch} ({what}; {len(self.files)} file(s))"
        if self.pull_request is not None:
            text += f"; pull request #{self.pull_request} {'opened' if self.created else 'updated'}"
            if self.pull_request_url:
                text += f": {self.pull_request_url}"
        else:
            text += "; local mode: open the pull request from that branch"
        return text


ASKPASS = """#!/bin/sh
case "$1" in
  Username*) echo x-access-token ;;
  *) printf '%s\\n' "$PIPELINES_GIT_TOKEN" ;;
esac
"""


def _token_environment(workdir: Path, token: str | None) -> dict[str, str]:
    """git's environment for an https remote with a token: git asks GIT_ASKPASS (a script that holds no secret)
    and gets the token from this environment, so it is in no URL, no config file and no command line."""
    if not token:
        return {}
    askpass = workdir / "askpass"
    askpass.write_text(ASKPASS)
    askpass.chmod(0o700)
    return {"GIT_ASKPASS": str(askpass), "PIPELINES_GIT_TOKEN": token, "GIT_TERMINAL_PROMPT": "0"}


def open_baseline(location: str, deploy_branch: str, name: str, account: Account, *, client=None,
                  push_token: str | None = None) -> BaselineResult:
    """Commit the baseline on its branch (starting from the deploy branch), push it, open or update the PR.
    `push_token`: the GitHub token git authenticates with (to clone, fetch and push over https)."""
    import git

    branch = BRANCH_PREFIX + name
    workdir = Path(tempfile.mkdtemp(prefix="pipelines-baseline-"))
    try:
        env = _token_environment(workdir, push_token)
        repo = git.Repo.clone_from(location, workdir / "repo", branch=deploy_branch, depth=1, no_tags=True,
                                   env=env or None)
        repo.git.update_environment(**env)
        files = baseline_files(workdir / "repo", name, account)
        repo.git.checkout("-B", branch)
        for rel, text in files.items():
            _write_inside(workdir / "repo", rel, text)
        repo.git.add("--all", "--", *files)
        author = git.Actor("pipelines-dagster", "pipelines-dagster@users.noreply.github.com")
        repo.index.commit(f"Baseline for account {name} ({account.id})", author=author, committer=author)
        remote = repo.remote("origin")
        existing = str(repo.git.ls_remote("--heads", "origin", branch)).split()
        pushed = True
        if existing:
            remote.fetch(f"+refs/heads/{branch}:refs/remotes/origin/{branch}", depth=1)
            pushed = repo.git.rev_parse(f"origin/{branch}^{{tree}}") != repo.git.rev_parse("HEAD^{tree}")
        if pushed:
            remote.push(f"+HEAD:refs/heads/{branch}")
        result = BaselineResult(branch, pushed, sorted(files))
        if client is not None:
            pr, created = client.create_or_update_pull_request(branch, deploy_branch, f"Baseline for account {name}",
                                                               pull_request_body(name, account, files))
            result.pull_request, result.pull_request_url, result.created = pr.number, pr.html_url, created
        return result
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
