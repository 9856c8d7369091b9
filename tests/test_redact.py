"""Redaction of known secret values and secret-looking patterns; the output cap keeping head and tail."""

from pipelines_dagster.core.model import PlanSummary
from pipelines_dagster.core.processes import OutputCapture
from pipelines_dagster.core.terraform_errors import error_message, parse_lock_info
from pipelines_dagster.redact import MASK, Redactor, StreamRedactor, without_url_credentials
from tests.conftest import OIDC_TOKEN


def test_known_values_are_masked_exactly_and_short_values_are_left_alone():
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    r = Redactor([secret, "abc", None, ""])
    assert r(f"key={secret}; abc stays") == f"key={MASK}; abc stays"
    assert r(f"{secret}{secret}") == MASK + MASK


def test_patterns_cover_aws_key_ids_github_tokens_jwts_and_assignments():
    r = Redactor()
    text = ("id AKIAIOSFODNN7EXAMPLE temp ASIAY34FZKBOKMUTVV7A "
            "pat ghp_abcdefghijklmnopqrstuvwxyz0123456789 app ghs_abcdefghijklmnopqrstuvwxyz0123456789 "
            "fine github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz "
            f"jwt {OIDC_TOKEN} "
            "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY "
            '"SessionToken": "IQoJb3JpZ2luX2VjEHQaCXVzLWVhc3QtMSJHMEUCIQ"')
    out = r(text)
    for leaked in ("AKIAIOSFODNN7EXAMPLE", "ASIAY34FZKBOKMUTVV7A", "ghp_abc", "ghs_abc", "github_pat_11",
                   OIDC_TOKEN, "wJalrXUtnFEMI", "IQoJb3JpZ2lu"):
        assert leaked not in out
    assert out.count(MASK) == 8
    assert "aws_secret_access_key = [REDACTED]" in out


def test_ordinary_terraform_output_is_untouched():
    r = Redactor()
    text = ("null_resource.item[0]: Creation complete after 0s [id=3269708081078147070]\n"
            "commit 0123456789abcdef0123456789abcdef01234567 role AROA3X42LBCD8ICQGFPT4\n")
    assert r(text) == text


def test_credentials_in_urls_are_masked_and_ssh_user_names_kept():
    r = Redactor()
    cases = {
        "fatal: could not read from https://alice:S3cretPassw0rd@git.example.com/acme/live.git":
            "fatal: could not read from https://[REDACTED]@git.example.com/acme/live.git",
        "remote: https://x-access-token:v1.abcdef0123456789@github.com/acme/live":
            "remote: https://[REDACTED]@github.com/acme/live",
        "token as user https://gl0123456789secret@gitlab.example/x.git":
            "token as user https://[REDACTED]@gitlab.example/x.git",
        "an unencoded @ in the password: http://bob:pa@ss@host:8080/r":
            "an unencoded @ in the password: http://[REDACTED]@host:8080/r",
        "ssh password ssh://deploy:hunter2hunter2@host/r.git": "ssh password ssh://[REDACTED]@host/r.git",
        "push url x-access-token:v1.abcdef0123456789@github.com/acme/live":
            "push url x-access-token:[REDACTED]@github.com/acme/live",
    }
    for text, masked in cases.items():
        assert r(text) == masked
    untouched = ("ssh://git@github.com/acme/live.git git@github.com:acme/live.git https://github.com/acme/live "
                 "mail ops@example.com image nginx:1.25@sha256:0a1b http://127.0.0.1:8080/x?a=b@c")
    assert r(untouched) == untouched
    assert without_url_credentials("https://x-access-token:T0KEN@github.com/acme/live.git") == \
        "https://github.com/acme/live.git"


KEY = """-----BEGIN RSA PRIVATE KEY-----
MIIEpAIBAAKCAQEA0Z3VS5JJcds3xfn/ygWyF8PbnGy0AHB7MhgwMbRvI0MBZhpF
WK5xAcqGf2Kl3ZbRz4ps0D7Wn8ovS0m4h1lSaF6nYQk7fNw0oMGxUmtcGpSQU0vN
-----END RSA PRIVATE KEY-----"""


def test_a_private_key_printed_line_by_line_never_reaches_the_output():
    capture = OutputCapture(limit=10_000, redactor=Redactor())
    for line in ["tls_private_key.app: Creation complete\n", "private_key_pem = <<EOT\n",
                 *[f"  {k}\n" for k in KEY.splitlines()], "EOT\n", "Apply complete! Resources: 1 added\n"]:
        capture.feed(line.encode())
    text = capture.text()
    assert "MIIEpAIB" not in text and "WK5xAcqG" not in text and "PRIVATE KEY" not in text
    assert text == ("tls_private_key.app: Creation complete\nprivate_key_pem = <<EOT\n  [REDACTED]\nEOT\n"
                    "Apply complete! Resources: 1 added\n")


def test_stream_redaction_of_keys_on_one_line_cut_short_or_followed_by_text():
    stream = StreamRedactor(Redactor())
    assert stream('{"key": "' + KEY.replace("\n", "\\n") + '"}\n') == '{"key": "[REDACTED]"}\n'
    assert stream("-----BEGIN OPENSSH PRIVATE KEY-----\n") == "[REDACTED]\n"
    assert stream("b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n") == ""
    assert stream("-----END OPENSSH PRIVATE KEY----- then https://u:p4ssw0rd@h/x\n") == \
        " then https://[REDACTED]@h/x\n"
    assert stream("after the key\n") == "after the key\n"
    cut = StreamRedactor(Redactor())  # no END line ever comes: everything after BEGIN stays masked
    assert [cut(line) for line in ["ok\n", KEY.splitlines()[0] + "\n", KEY.splitlines()[1] + "\n", "more\n"]] == [
        "ok\n", MASK + "\n", "", ""]
    assert Redactor()("head\n" + "\n".join(KEY.splitlines()[:2])) == "head\n" + MASK  # one text, cut short


def test_output_cap_keeps_head_and_tail_and_says_what_it_dropped():
    capture = OutputCapture(limit=200, redactor=Redactor(["supersecretvalue"]))
    for i in range(100):
        capture.feed(f"line {i:03d} supersecretvalue\n".encode())
    text = capture.text()
    assert text.startswith("line 000 [REDACTED]\n")
    assert text.endswith("line 099 [REDACTED]\n")
    assert "lines" in text and "omitted" in text and "line 050" not in text
    assert len(text) < 300 and "supersecretvalue" not in text


def test_lock_info_and_error_messages_are_parsed_from_terraform_output():
    text = """Error: Error acquiring the state lock

Error message: ConditionalCheckFailedException: The conditional request failed
Lock Info:
  ID:        6f1c5b3e-0000-4000-8000-000000000001
  Path:      tfstate/app/terraform.tfstate
  Operation: OperationTypeApply
  Who:       runner@ci-42
  Version:   1.0.3
  Created:   2024-05-01 10:00:00 +0000 UTC
  Info:
"""
    lock = parse_lock_info(text)
    assert (lock.id, lock.who, lock.operation) == ("6f1c5b3e-0000-4000-8000-000000000001", "runner@ci-42",
                                                   "OperationTypeApply")
    assert parse_lock_info("Error: Unsupported argument") is None
    assert error_message("noise\nError: Unsupported argument\n\n  on main.tf line 3:\nmore").startswith(
        "Error: Unsupported argument")


def test_plan_summary_counts_like_terraform():
    plan = {"resource_changes": [
        {"address": "a.create", "change": {"actions": ["create"]}},
        {"address": "a.update", "change": {"actions": ["update"]}},
        {"address": "a.replace", "change": {"actions": ["delete", "create"]}},
        {"address": "a.delete", "change": {"actions": ["delete"]}},
        {"address": "a.noop", "change": {"actions": ["no-op"]}},
        {"address": "data.a.read", "change": {"actions": ["read"]}},
    ], "output_changes": {"o": {"actions": ["update"]}, "same": {"actions": ["no-op"]}}}
    summary = PlanSummary.from_plan_json(plan)
    assert (summary.add, summary.change, summary.destroy) == (2, 1, 2)
    assert [r.action for r in summary.resources] == ["create", "update", "replace", "delete"]
    assert summary.to_dict()["outputs"] == [{"name": "o", "action": "update", "actions": ["update"]}]
    assert summary.line() == "2 to add, 1 to change, 2 to destroy, 1 output change"
