"""PR comment markdown: rows, outputs, GitHub's 65,536-character limit whatever the number of units, and hostile
repository text rendering as text (rendered with GitHub's cmark-gfm, tests/gfm.py)."""

from pipelines_dagster.core.model import InfraChange, Outcome, PlanSummary, ResourceChange, Status
from pipelines_dagster.core.render import GITHUB_COMMENT_LIMIT, RESOURCES_PER_UNIT, run_report, unit_plan
from tests.gfm import github, visible


def outcome(i, status="succeeded", output="", unit=None, account="prod", message=None, resources=()):
    change = InfraChange(type="ModuleChanged", unit=unit or f"prod/us-east-1/app{i}", account=account, action="plan")
    changes = [ResourceChange(address=address, action=action, actions=[action]) for address, action in resources]
    return Outcome.note(change, Status(status), message if message is not None else
                        ("Error: boom" if status == "failed" else ""),
                        summary=PlanSummary(add=i, change=1, resources=changes), duration_s=12.4, output=output)


def test_rows_outputs_errors_and_link():
    body = run_report(title="plan", head_sha="f" * 40, outcomes=[outcome(1, output="Plan: 1 to add"),
                                                                      outcome(2, "failed", output="trace")],
                          errors=["root.hcl:3: syntax error"], warnings=["w1"], run_url="http://ui/runs/abc")
    assert "### ❌ pipelines-dagster plan: failed" in body
    assert "Commit `ffffffffffff` · 2 change(s) · [Dagster run](http://ui/runs/abc)" in body
    assert ("| ✅ succeeded | ModuleChanged | `prod/us-east-1/app1` | prod | plan "
            "| 1 to add, 1 to change, 0 to destroy | 12s |") in body
    assert "- root.hcl:3: syntax error" in body and "<details><summary>Warnings</summary>" in body
    assert body.index("prod/us-east-1/app2: plan") < body.index("prod/us-east-1/app1: plan")  # failures first
    assert "Error: boom" in body


def test_three_hundred_units_with_huge_outputs_stay_under_the_limit():
    outcomes = [outcome(i, "failed" if i == 299 else "succeeded", output=f"unit {i}\n" + "x" * 200_000 + "\nEND")
                for i in range(300)]
    body = run_report(title="plan", head_sha="a" * 40, outcomes=outcomes)
    assert len(body) <= GITHUB_COMMENT_LIMIT
    assert body.count("| ✅ succeeded |") == 299 and body.count("| ❌ failed |") == 1  # every row kept
    assert "prod/us-east-1/app299: plan" in body  # the failure's output comes first
    assert "characters cut" in body and "more output(s) are in the Dagster run's logs" in body


def test_rows_fold_when_even_the_table_is_too_long():
    outcomes = [outcome(i, unit="prod/" + "x" * 300 + str(i)) for i in range(2000)]
    body = run_report(title="apply", head_sha="b" * 40, outcomes=outcomes)
    assert len(body) <= GITHUB_COMMENT_LIMIT
    shown = body.count("| ✅ succeeded |")
    assert 0 < shown < 2000 and f"{2000 - shown} more change(s) not shown" in body


def test_output_fences_are_longer_than_any_backtick_run_in_the_output():
    output = "```\n<details>|\n`````\nend"
    body = run_report(title="plan", head_sha="c" * 40, outcomes=[outcome(1, output=output)])
    assert f"``````\n{output}\n``````" in body
    assert github(body).text.count(output) == 1  # verbatim, in one code block


HOSTILE_UNIT = "prod/`</details><h3>unit</h3>`/@alice|x"
HOSTILE_WARNING = ('live/terragrunt.hcl:3: get_env("X", "</details><h3>Plan succeeded</h3>'
                   '<img src=https://evil.example/x.png>") has no value; cc @acme/admins, fixes #12')


def test_hostile_repository_text_renders_as_text_on_github():
    """Unit paths, accounts, errors, warnings quoting HCL, messages and outputs: no tag, link, image or mention of
    theirs reaches the rendered comment; each shows as the text it is."""
    outcomes = [
        outcome(0, "failed", unit=HOSTILE_UNIT, account="@mallory **x** [y](https://evil.example)",
                message="Error: see https://evil.example/login and www.evil.example, mail admin@evil.example",
                output="````\n</details><h3>Apply complete</h3>\n```\n<img src=x>\n@bob #34"),
        outcome(2, output="Plan: 2 to add")]
    body = run_report(title="plan", head_sha="d" * 40, outcomes=outcomes, warnings=[HOSTILE_WARNING],
                          errors=["accounts.yml:2: <b>bad</b> | [click](https://evil.example) ![i](https://e.x/i)"],
                          run_url="http://ui.example/runs/abc")
    rendered = github(body)
    assert rendered.links == ["http://ui.example/runs/abc"]  # ours, and nothing else
    assert rendered.tags.count("h3") == 1 and "img" not in rendered.tags
    assert rendered.tags.count("details") == 3 and rendered.tags.count("summary") == 3  # warnings, 2 outputs
    assert set(rendered.tags) <= {"h3", "p", "a", "strong", "ul", "li", "details", "summary", "table", "thead",
                                  "tbody", "tr", "th", "td", "code", "pre"}
    assert rendered.mentions == [] and rendered.references == []
    text = visible(rendered.text)
    for shown in (HOSTILE_UNIT, HOSTILE_WARNING, "@mallory **x** [y](https://evil.example)",
                  "accounts.yml:2: <b>bad</b> | [click](https://evil.example) ![i](https://e.x/i)",
                  "</details><h3>Apply complete</h3>\n```\n<img src=x>\n@bob #34"):
        assert shown in text
    cells = [row for row in body.splitlines() if row.startswith("| ❌")][0]
    assert cells.count(" | ") == 6  # the pipe in the unit path does not add a column
    assert "| ``prod/`</details><h3>unit</h3>`/@alice\\|x`` |" in cells


def test_each_unit_lists_its_resource_changes_collapsed():
    body = run_report(title="plan", head_sha="e" * 40, outcomes=[
        outcome(1, resources=[("null_resource.item[0]", "create"), ("aws_instance.web", "replace")]),
        outcome(2, output="Plan: 2 to add", resources=[("module.db.aws_db_instance.x", "update")]),
        outcome(3)])
    assert ("<details><summary>prod/us-east-1/app1: plan, 2 resource changes</summary>\n\n"
            "- `null_resource.item[0]`: create\n- `aws_instance.web`: replace\n\n</details>") in body
    assert ("<details><summary>prod/us-east-1/app2: plan, 1 resource change</summary>\n\n"
            "- `module.db.aws_db_instance.x`: update\n\n```\nPlan: 2 to add\n```\n\n</details>") in body
    assert "app3: plan" not in body  # nothing to list, no output: no section
    rendered = github(body)
    assert rendered.tags.count("details") == 2 and rendered.tags.count("li") == 3


def test_hostile_resource_addresses_render_as_text():
    address = 'module.x["</details><img src=https://evil.example/i.png>@bob `#12`"].null_resource.y'
    body = run_report(title="plan", head_sha="f" * 40, outcomes=[
        outcome(1, resources=[(address, "create"), ("null_resource.z", "<b>destroy</b> @alice")])])
    rendered = github(body)
    assert "img" not in rendered.tags and "b" not in rendered.tags and rendered.links == []
    assert rendered.mentions == [] and rendered.references == []
    assert address in rendered.text and "<b>destroy</b> @alice" in visible(rendered.text)


def test_resource_lists_are_capped_per_unit_and_the_comment_stays_under_the_limit():
    many = [(f"module.m{j}.null_resource.with_a_rather_long_name_{'x' * 60}[{j}]", "create") for j in range(200)]
    outcomes = [outcome(i, "failed" if i == 299 else "succeeded", output="y" * 5_000, resources=many)
                for i in range(300)]
    body = run_report(title="plan", head_sha="a" * 40, outcomes=outcomes)
    assert len(body) <= GITHUB_COMMENT_LIMIT
    assert body.count("| ✅ succeeded |") == 299 and body.count("| ❌ failed |") == 1  # every row kept
    first = body.index("<details>")
    assert body.index("prod/us-east-1/app299: plan, 200 resource changes", first) == first + len(
        "<details><summary>")  # the failure's section comes first
    sections = body.count("<details>")
    assert 0 < sections < 300 and f"_{300 - sections} more output(s) are in the Dagster run's logs" in body
    assert body.count(f"- … and {200 - RESOURCES_PER_UNIT} more (the unit's asset in Dagster lists them)") == sections


def test_without_html_sections_get_bold_titles_that_render_as_text():
    """Dagster's markdown (the local-mode report) drops raw HTML: there sections are titled in bold instead."""
    body = run_report(title="plan", head_sha="f" * 40, collapsible=False, warnings=[HOSTILE_WARNING],
                          outcomes=[outcome(1, unit=HOSTILE_UNIT, resources=[("null_resource.a", "create")])])
    assert "<details>" not in body and "**Warnings**" in body
    rendered = github(body)
    assert rendered.tags.count("strong") == 2 and "details" not in rendered.tags and "img" not in rendered.tags
    assert set(rendered.tags) <= {"h3", "p", "a", "strong", "ul", "li", "table", "thead", "tbody", "tr", "th", "td",
                                  "code"}
    assert f"{HOSTILE_UNIT}: plan, 1 resource change" in visible(rendered.text)
    assert rendered.mentions == [] and rendered.references == []


def test_a_units_plan_lists_its_outputs_and_why_a_resource_is_replaced_and_the_run_names_its_subject():
    change = InfraChange(type="ModuleChanged", unit="dev/app", account="dev", action="plan")
    summary = PlanSummary(add=1, destroy=1, resources=[
        ResourceChange(address="null_resource.x", action="replace", actions=["delete", "create"],
                       reason="forces replacement: triggers")],
        outputs=[ResourceChange(address="endpoint", action="update", actions=["update"])])
    outcome = Outcome.note(change, Status.SUCCEEDED, "Plan: 1 to add, 0 to change, 1 to destroy.").model_copy(
        update={"summary": summary})
    body = run_report(title="plan", head_sha="a" * 40, outcomes=[outcome], subject="pull request #7")
    assert "pull request #7 · commit `aaaaaaaaaaaa` · 1 change(s)" in body
    assert "- `null_resource.x`: replace (forces replacement: triggers)" in body
    assert "- `output.endpoint`: update" in body
    alone = unit_plan(outcome)  # the unit's own entry in Dagster: no HTML, which Dagster does not render
    assert alone.startswith("**dev/app: plan, 1 resource change**") and "<details>" not in alone
    assert "forces replacement: triggers" in alone and "output.endpoint" in alone
