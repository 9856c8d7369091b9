"""PR comment markdown: rows, outputs, and GitHub's 65,536-character limit whatever the number of units."""

from pipelines_dagster.core.report import GITHUB_COMMENT_LIMIT, render_comment


def outcome(i, status="succeeded", output="", unit=None):
    return {"change": {"type": "ModuleChanged", "unit": unit or f"prod/us-east-1/app{i}", "account": "prod",
                       "action": "plan"},
            "status": status, "summary": {"add": i, "change": 1, "destroy": 0}, "duration_s": 12.4, "output": output,
            "message": "Error: boom" if status == "failed" else ""}


def test_rows_outputs_errors_and_link():
    body = render_comment(title="plan", head_sha="f" * 40, outcomes=[outcome(1, output="Plan: 1 to add"),
                                                                      outcome(2, "failed", output="trace")],
                          errors=["root.hcl:3: syntax error"], warnings=["w1"], run_url="http://ui/runs/abc")
    assert "### ❌ pipelines-dagster plan: failed" in body
    assert "Commit `ffffffffffff` · 2 change(s) · [Dagster run](http://ui/runs/abc)" in body
    assert "| ✅ succeeded | ModuleChanged | `prod/us-east-1/app1` | prod | plan | 1 to add, 1 to change, 0 to destroy | 12s |" in body
    assert "- root.hcl:3: syntax error" in body and "<details><summary>Warnings</summary>" in body
    assert body.index("prod/us-east-1/app2: plan") < body.index("prod/us-east-1/app1: plan")  # failures first
    assert "Error: boom" in body


def test_three_hundred_units_with_huge_outputs_stay_under_the_limit():
    outcomes = [outcome(i, "failed" if i == 299 else "succeeded", output=f"unit {i}\n" + "x" * 200_000 + "\nEND")
                for i in range(300)]
    body = render_comment(title="plan", head_sha="a" * 40, outcomes=outcomes)
    assert len(body) <= GITHUB_COMMENT_LIMIT
    assert body.count("| ✅ succeeded |") == 299 and body.count("| ❌ failed |") == 1  # every row kept
    assert "prod/us-east-1/app299: plan" in body  # the failure's output comes first
    assert "characters cut" in body and "more output(s) are in the Dagster run's logs" in body


def test_rows_fold_when_even_the_table_is_too_long():
    outcomes = [outcome(i, unit="prod/" + "x" * 300 + str(i)) for i in range(2000)]
    body = render_comment(title="apply", head_sha="b" * 40, outcomes=outcomes)
    assert len(body) <= GITHUB_COMMENT_LIMIT
    shown = body.count("| ✅ succeeded |")
    assert 0 < shown < 2000 and f"{2000 - shown} more change(s) not shown" in body


def test_markdown_breaking_characters_in_output_are_neutralised():
    body = render_comment(title="plan", head_sha="c" * 40, outcomes=[outcome(1, output="```\n<details>|")])
    assert body.count("```") == 2
