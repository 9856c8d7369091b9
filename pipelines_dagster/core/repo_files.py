"""`.pipelines.yml` and `accounts.yml`: loaded from text, validated, errors naming file, entry and line."""

import functools
import re
from dataclasses import dataclass, field

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .model import Problem, UnitKind

PIPELINES_FILE = ".pipelines.yml"
DEFAULT_ACCOUNTS_FILE = "accounts.yml"
ACCOUNT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
ACCOUNT_ID_RE = re.compile(r"^\d{12}$")
EMAIL_RE = re.compile(r"^[^@\s\"'`\\$<>{}]+@[^@\s\"'`\\$<>{}]+$")
REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")  # us-east-1, us-gov-west-1, ap-southeast-4


class ConfigError(Exception):
    """A configuration file is unusable; carries the problems found."""

    def __init__(self, problems: list[Problem]):
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


class RolesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    plan: str = "pipelines-plan"
    apply: str = "pipelines-apply"
    session_duration_s: int = Field(default=3600, ge=900, le=43200)


class PipelinesConfig(BaseModel):
    """Contents of `.pipelines.yml` (every key optional)."""

    model_config = ConfigDict(extra="forbid")
    deploy_branch: str = "main"
    accounts_file: str = DEFAULT_ACCOUNTS_FILE
    ignore: list[str] = Field(default_factory=list)
    units: list[str] = Field(default_factory=list)
    dependencies: dict[str, list[str]] = Field(default_factory=dict)  # unit -> units it runs after
    account_paths: dict[str, str] = Field(default_factory=dict)
    engine: dict[str, str] = Field(default_factory=dict)
    roles: RolesConfig = Field(default_factory=RolesConfig)

    @field_validator("units")
    @classmethod
    def _clean_units(cls, value: list[str]) -> list[str]:
        return [normalize_unit_path(v) for v in value]

    @field_validator("dependencies")
    @classmethod
    def _clean_dependencies(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        return {normalize_unit_path(k): [normalize_unit_path(d) for d in v] for k, v in value.items()}

    @field_validator("engine")
    @classmethod
    def _check_engines(cls, value: dict[str, str]) -> dict[str, str]:
        for key, engine in value.items():
            if engine not in ("terraform", "tofu", "terragrunt"):
                raise ValueError(f"engine for {key!r} must be terraform, tofu or terragrunt, not {engine!r}")
        return value

    def ignore_spec(self):
        return _globs(tuple(self.ignore))

    def account_for(self, unit_path: str, accounts: "Accounts | None") -> str | None:
        """The account owning a unit: the first matching `account_paths` glob, else its top-level folder."""
        for pattern, account in self.account_paths.items():
            if _globs((pattern,)).match_file(unit_path + "/"):
                return account
        if accounts is None:
            return None
        return unit_path.split("/", 1)[0]

    def engine_for(self, unit_path: str, kind: UnitKind) -> str:
        """`engine` maps `default`, `terragrunt`, `terraform` or a unit path glob to an engine binary."""
        for pattern, engine in self.engine.items():
            if pattern in ("default", "terragrunt", "terraform"):
                continue
            if _globs((pattern,)).match_file(unit_path + "/"):
                return engine
        if kind is UnitKind.TERRAGRUNT:
            return self.engine.get("terragrunt", "terragrunt")
        return self.engine.get("terraform", self.engine.get("default", "terraform"))


@functools.lru_cache(maxsize=256)
def _globs(patterns: tuple[str, ...]):
    """gitignore-style globs (pathspec is imported only when a configuration uses globs)."""
    if not patterns:
        return _NO_GLOBS
    import pathspec

    return pathspec.PathSpec.from_lines("gitwildmatch", patterns)


class _NoGlobs:
    @staticmethod
    def match_file(_path: str) -> bool:
        return False


_NO_GLOBS = _NoGlobs()


def normalize_unit_path(path: str) -> str:
    return path.strip().strip("/").replace("\\", "/")


class Account(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    email: str | None = None
    deploy_order: int | None = None
    plan_role_arn: str | None = None
    apply_role_arn: str | None = None
    region: str | None = None  # becomes a folder name of the account's baseline, and the units' AWS_REGION

    @field_validator("email")
    @classmethod
    def _email_is_an_address(cls, value):
        if value is not None and not EMAIL_RE.match(value):
            raise ValueError(f"email {value!r} is not an email address")
        return value

    @field_validator("region")
    @classmethod
    def _region_is_a_region(cls, value):
        if value is not None and not REGION_RE.match(value):
            raise ValueError(f"region {value!r} is not an AWS region name (like us-east-1)")
        return value

    @field_validator("id", mode="before")
    @classmethod
    def _id_is_string(cls, value):
        if not isinstance(value, str):
            raise ValueError(
                f"id must be a quoted string of 12 digits (YAML read {value!r}, which loses leading zeros)")
        if not ACCOUNT_ID_RE.match(value):
            raise ValueError(f"id {value!r} is not 12 digits")
        return value


@dataclass
class Accounts:
    file: str
    entries: dict[str, Account] = field(default_factory=dict)
    raw: dict[str, object] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)


def _key_lines(text: str) -> dict[str, int]:
    """Line (1-based) of each top-level mapping key, for error messages."""
    try:
        node = yaml.compose(text, Loader=_LOADER)
    except yaml.YAMLError:
        return {}
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {k.value: k.start_mark.line + 1 for k, _ in node.value if isinstance(k, yaml.ScalarNode)}


MAX_CONFIG_BYTES = 4 << 20
MAX_YAML_DEPTH = 32  # collections inside collections
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _check_yaml(text: str, file: str) -> None:
    """Refuse what could make loading unbounded: huge files, anchors and aliases (one alias of an alias of ...
    expands exponentially: "billion laughs"), and deep nesting (loading recurses)."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError([Problem(file=file, message=f"is {len(text):,} characters long; configuration files are "
                                                      f"limited to {MAX_CONFIG_BYTES:,}")])
    depth = 0
    for event in yaml.parse(text, Loader=_LOADER):
        line = event.start_mark.line + 1 if event.start_mark else None
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise ConfigError([Problem(file=file, message="YAML anchors and aliases (&name, *name) are not allowed: "
                                                          "write the values out", line=line)])
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise ConfigError([Problem(file=file, message=f"nested more than {MAX_YAML_DEPTH} levels deep",
                                           line=line)])
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _load_yaml(text: str, file: str):
    try:
        _check_yaml(text, file)
        return yaml.load(text, Loader=_LOADER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([Problem(file=file, message=f"malformed YAML: {problem}",
                                   line=mark.line + 1 if mark else None)]) from exc
    except ValueError as exc:  # a scalar YAML cannot convert, e.g. an integer of thousands of digits
        raise ConfigError([Problem(file=file, message=f"malformed YAML: {str(exc)[:200]}")]) from exc


def _pydantic_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def load_pipelines_config(text: str | None, file: str = PIPELINES_FILE) -> PipelinesConfig:
    if text is None:
        return PipelinesConfig()
    data = _load_yaml(text, file)
    if data is None:
        return PipelinesConfig()
    if not isinstance(data, dict):
        raise ConfigError([Problem(file=file, message="must be a mapping of settings", line=1)])
    try:
        return PipelinesConfig.model_validate(data)
    except ValidationError as exc:
        lines = _key_lines(text)
        first = exc.errors()[0]["loc"][0] if exc.errors() and exc.errors()[0]["loc"] else None
        raise ConfigError([Problem(file=file, message=_pydantic_message(exc), line=lines.get(str(first)))]) from exc


def load_accounts(text: str, file: str = DEFAULT_ACCOUNTS_FILE) -> tuple[Accounts, list[Problem]]:
    """Valid entries, plus a problem for every invalid one (the rest stay usable)."""
    data = _load_yaml(text, file)
    accounts = Accounts(file=file, lines=_key_lines(text))
    if data is None:
        return accounts, []
    if not isinstance(data, dict):
        raise ConfigError([Problem(file=file, message="must be a mapping of account name to {id, email, ...}", line=1)])
    problems: list[Problem] = []
    seen_ids: dict[str, str] = {}
    for name, entry in data.items():
        name = str(name)
        line = accounts.lines.get(name)
        accounts.raw[name] = entry
        if not ACCOUNT_NAME_RE.match(name) or name in (".", ".."):
            problems.append(Problem(file=file, line=line, message=f"account {name!r}: name must be usable as a folder "
                                    "name (letters, digits, '.', '_', '-', starting with a letter or digit)"))
            continue
        if not isinstance(entry, dict):
            problems.append(Problem(file=file, message=f"account {name!r}: must be a mapping with at least 'id'",
                                    line=line))
            continue
        try:
            account = Account.model_validate(entry)
        except ValidationError as exc:
            problems.append(Problem(file=file, message=f"account {name!r}: {_pydantic_message(exc)}", line=line))
            continue
        if account.id in seen_ids:
            problems.append(Problem(file=file, message=f"account {name!r}: id {account.id} is already used by account "
                                          f"{seen_ids[account.id]!r}", line=line))
            continue
        seen_ids[account.id] = name
        accounts.entries[name] = account
    return accounts, problems
