"""Redaction of credentials in text that leaves the executor: captured output, results, messages, logs.

Two layers: the exact values of secrets we know about (credentials handed to a child process, the OIDC token,
tokens in our own environment), and patterns for secrets we do not know (AWS access key ids, GitHub tokens,
JWTs, `aws_secret_access_key = ...` style assignments, credentials in URLs, private keys). Output read line by line
goes through a `StreamRedactor`, which also masks the lines of a private key between its BEGIN and END lines.
"""

import os
import re
from collections.abc import Callable, Iterable, Mapping

MASK = "[REDACTED]"

# Values shorter than this are not redacted by value: masking every "test" or "1234" would make output unreadable
# and protects nothing (real credentials are far longer).
MIN_SECRET_LENGTH = 8

# Environment variables whose values are secrets wherever they are set.
SECRET_ENV_VARS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "GITHUB_TOKEN",
    "GH_TOKEN",
    "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
    "ACTIONS_RUNTIME_TOKEN",
    "PIPELINES_GITHUB_APP_PRIVATE_KEY",
)

_PEM_BEGIN = r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----"
_PEM_END = r"-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----"
# scheme://userinfo@: the user information runs to the authority's last '@' (a password may hold an unencoded '@')
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^\s/?#]+@)")

_PATTERNS: list[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]] = [
    # AWS access key ids: long-term (AKIA), temporary (ASIA), and the other credential-bearing prefixes.
    (re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Z0-9])"), MASK),
    # GitHub tokens: personal, OAuth, user-to-server, server-to-server, refresh; fine-grained PATs.
    (re.compile(r"(?<![A-Za-z0-9_])gh[pousr]_[A-Za-z0-9]{30,255}"), MASK),
    (re.compile(r"(?<![A-Za-z0-9_])github_pat_[A-Za-z0-9_]{22,255}"), MASK),
    # JWTs (OIDC tokens): header.payload.signature, base64url, header and payload start with '{"' -> 'eyJ'.
    (re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), MASK),
    # Secret keys and session tokens in assignments: aws_secret_access_key = X, "SessionToken": "X", ...
    (re.compile(r"(?i)((?:aws_?)?(?:secret_?access_?key|session_?token|security_?token)[\"']?\s*[:=]\s*[\"']?)"
                r"([A-Za-z0-9/+=]{16,})"), r"\1" + MASK),
    # PEM private keys (a GitHub App key, for instance); one cut short (no END) is masked to the end of the text.
    (re.compile(_PEM_BEGIN + r"(?:.*?" + _PEM_END + r"|.*)", re.S), MASK),
    # Credentials in URLs (https://user:password@host, https://TOKEN@host; ssh://git@host is no secret), and the
    # x-access-token:TOKEN@ / oauth2:TOKEN@ forms of git remotes without their scheme.
    (_URL_USERINFO, lambda m: m.group(1) + (m.group(2) if _userinfo_is_public(m) else MASK + "@")),
    (re.compile(r"(?i)(?<![\w.-])(x-access-token|oauth2|gitlab-ci-token):[^\s@/]+@"), r"\1:" + MASK + "@"),
]


def _userinfo_is_public(match: re.Match) -> bool:
    return ":" not in match.group(2) and match.group(1).lower() in ("ssh://", "git+ssh://", "ssh+git://")


def without_url_credentials(text: str) -> str:
    """`text` with the credentials of its URLs removed (not masked): https://user:pass@host/x -> https://host/x."""
    return _URL_USERINFO.sub(lambda m: m.group(1) + (m.group(2) if _userinfo_is_public(m) else ""), text)


class Redactor:
    """Masks known secret values exactly, then secret-looking patterns."""

    def __init__(self, secrets: Iterable[str | None] = ()):
        self._secrets: set[str] = set()
        self._regex: re.Pattern | None = None
        self.add(*secrets)

    def add(self, *secrets: str | None) -> "Redactor":
        for secret in secrets:
            if not secret:
                continue
            secret = secret.strip()
            if len(secret) >= MIN_SECRET_LENGTH:
                self._secrets.add(secret)
                # Multi-line secrets (PEM keys) also leak line by line.
                for line in secret.splitlines():
                    if len(line.strip()) >= 16:
                        self._secrets.add(line.strip())
        if self._secrets:
            ordered = sorted(self._secrets, key=len, reverse=True)  # longest first: no partial masks
            self._regex = re.compile("|".join(re.escape(s) for s in ordered))
        return self

    def add_env(self, env: Mapping[str, str]) -> "Redactor":
        """Secrets among environment variables (by name)."""
        return self.add(*(env.get(name) for name in SECRET_ENV_VARS))

    def __call__(self, text: str) -> str:
        if not text:
            return text
        if self._regex is not None:
            text = self._regex.sub(MASK, text)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text

    redact = __call__


def default_redactor(*secrets: str | None) -> Redactor:
    """A redactor for the given values plus the secrets in this process's own environment."""
    return Redactor(secrets).add_env(os.environ)


class StreamRedactor:
    """Redacts text read line by line (a child process's output). A private key spans lines, which a redactor
    seeing one line at a time would let through: from a line with a key's BEGIN marker to the line with its END
    marker, one mask stands for the whole key (and without an END, everything after BEGIN stays masked)."""

    _BEGIN = re.compile(_PEM_BEGIN)
    _END = re.compile(_PEM_END)

    def __init__(self, redactor: Redactor):
        self.redactor = redactor
        self._in_key = False

    def __call__(self, text: str) -> str:
        return "".join(self._line(line) for line in text.splitlines(keepends=True))

    def _line(self, line: str) -> str:
        if self._in_key:
            end = self._END.search(line)
            if end is None:
                return ""
            self._in_key = False
            rest = line[end.end():]
            return self._line(rest) if rest.strip() else ""
        begin = self._BEGIN.search(line)
        if begin is None or self._END.search(line, begin.end()):
            return self.redactor(line)
        self._in_key = True
        return self.redactor(line[:begin.start()]) + MASK + ("\n" if line.endswith("\n") else "")
