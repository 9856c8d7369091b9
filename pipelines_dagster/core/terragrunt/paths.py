"""Path arithmetic of evaluation: repo-relative paths (forward slashes, "" for the root) and the absolute paths
that evaluated expressions see, under ROOT; module sources split into the local folder they name."""

import posixpath

from .values import EvalError, shorten

ROOT = "/.pipelines-repo"  # where the repository root appears to evaluated expressions (get_repo_root())
TERRAGRUNT_FILE = "terragrunt.hcl"
MAX_PATH_CHARS = 4096  # PATH_MAX


def to_abs(rel: str) -> str:
    return ROOT if rel == "" else f"{ROOT}/{rel}"


def to_rel(abs_path: str) -> str:
    """Repo-relative path of an absolute one; EvalError when it lies outside the repository."""
    norm = posixpath.normpath(abs_path)
    if norm == ROOT:
        return ""
    if not norm.startswith(ROOT + "/"):
        raise EvalError(f"path {shorten(abs_path)} escapes the repository")
    return norm[len(ROOT) + 1:]


def rel_dir(path: str) -> str:
    return posixpath.dirname(path)


def relpath(target_rel: str, start_rel: str) -> str:
    """The relative path from one repo-relative folder to another."""
    return posixpath.relpath(to_abs(target_rel), to_abs(start_rel))


def resolve_path(base_dir_rel: str, value: str) -> str:
    """A path as written in configuration, relative to base_dir, as a repo-relative path."""
    if len(value) > MAX_PATH_CHARS:
        raise EvalError(f"path {shorten(value)} is {len(value):,} characters long (the limit is {MAX_PATH_CHARS})")
    embedded = value.rfind(ROOT + "/")
    if embedded > 0 or (embedded < 0 and value.endswith(ROOT) and len(value) > len(ROOT)):
        # "${get_terragrunt_dir()}/${find_in_parent_folders("x")}": written for Terragrunt versions whose
        # find_in_parent_folders returned a relative path; the absolute part is the file meant
        value = value[embedded:] if embedded > 0 else ROOT
    try:
        return to_rel(value if value.startswith("/") else posixpath.join(to_abs(base_dir_rel), value))
    except EvalError:
        raise EvalError(f"path {shorten(value)} escapes the repository") from None


def split_source(value: str) -> str | None:
    """Local directory (absolute, in evaluator space) of a terraform/module source, or None when remote."""
    value = value.split("?", 1)[0]
    if "::" in value or value.startswith(("git@", "github.com/", "bitbucket.org/", "http://", "https://",
                                         "s3", "gcs", "tfr:")):
        return None
    if not (value.startswith(("/", "./", "../")) or value in (".", "..")):
        return None
    # "dir//subdir": the folder before // is copied, the module is the subdir
    if "//" in value.lstrip("/"):
        lead = "/" if value.startswith("/") else ""
        root, sub = value.lstrip("/").split("//", 1)
        value = lead + root + "/" + sub
    return value


def config_file(unit_dir: str) -> str:
    """The terragrunt.hcl of a folder (the repository root's is just the file name)."""
    return f"{unit_dir}/{TERRAGRUNT_FILE}" if unit_dir else TERRAGRUNT_FILE
