"""What a unit's processes can do: no new privileges, limited resources, output read with caps, and a uid that
passes to the next unit with nothing of the previous one left behind (no process, no file); root is never a
unit user."""

import dataclasses
import os
import resource
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from pipelines_dagster.core.isolation.access import IsolationError
from pipelines_dagster.core.isolation.users import _uids_in_use, lease_uid, resolve_unit_user
from pipelines_dagster.core.model import Status
from tests.conftest import null_unit
from tests.core.test_engine import request

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="units switch users only when the pipeline runs as root")


def limits(text: str) -> dict[str, str]:
    """/proc/<pid>/limits: limit name -> soft limit."""
    return {line[:26].strip(): line[26:].split()[0] for line in text.splitlines()[1:]}


def test_unit_processes_have_no_new_privileges_and_the_deployments_limits(repo, aws, make_executor, settings,
                                                                          drop_box):
    seen = drop_box / "seen"
    extra = f'''resource "null_resource" "probe" {{
  provisioner "local-exec" {{
    command = <<-EOT
      grep NoNewPrivs /proc/self/status > {seen}.status
      cat /proc/self/limits > {seen}.limits
      head -c 68157440 /dev/zero > $TMPDIR/big; echo $? > {seen}.fsize
    EOT
  }}
}}
'''
    unit = f"dev/limits-{uuid.uuid4().hex[:6]}"
    head = repo.commit({f"{unit}/main.tf": null_unit(aws.endpoint, unit, count=1, extra=extra)})
    executor = make_executor(settings=dataclasses.replace(settings, unit_memory_mb=3000, unit_file_mb=64,
                                                          unit_cpu_s=900, unit_processes=700))

    result = executor.execute(request(unit, "apply", head))

    assert result.status is Status.SUCCEEDED, result.message + result.output  # terraform runs within them
    assert Path(f"{seen}.status").read_text().split() == ["NoNewPrivs:", "1"]
    found = limits(Path(f"{seen}.limits").read_text())
    assert found["Max address space"] == str(3000 << 20) and found["Max file size"] == str(64 << 20)
    assert found["Max cpu time"] == "900" and found["Max core file size"] == "0"
    assert found["Max processes"] == ("700" if os.geteuid() == 0 else found["Max processes"])
    assert Path(f"{seen}.fsize").read_text().strip() == "153"  # 128 + SIGXFSZ: a larger file is refused


def fake_engine(drop_box: Path, show: str, plan: str = "") -> Path:
    script = drop_box / "engine"
    script.write_text(f'''#!/bin/sh
case "$1" in
  show) {show} ;;
  plan) {plan} ;;
esac
''')
    script.chmod(0o755)
    return script


def peak_rss_mb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def test_a_huge_plan_json_is_refused_without_being_read(repo, aws, make_executor, settings, drop_box):
    # 1 GiB (sparse), far beyond the limit
    engine = fake_engine(drop_box, show="dd if=/dev/zero bs=1 count=1 seek=1G status=none")
    unit = f"dev/bigplan-{uuid.uuid4().hex[:6]}"
    head = repo.commit({f"{unit}/main.tf": null_unit(aws.endpoint, unit, count=1)})
    executor = make_executor(settings=dataclasses.replace(settings, binaries={"terraform": str(engine)},
                                                          plan_json_max_mb=1))
    before = peak_rss_mb()

    result = executor.execute(request(unit, "plan", head))

    assert result.status is Status.FAILED
    assert result.message == ("the plan from `terraform show -json` is larger than 1 MiB "
                              "(PIPELINES_PLAN_JSON_MAX_MB): not read")
    assert peak_rss_mb() - before < 200


def test_a_huge_log_is_read_at_both_ends_only(repo, aws, make_executor, settings, drop_box):
    # 1 GiB (sparse) between a first and a last line
    engine = fake_engine(drop_box, show='echo \'{"resource_changes": []}\'',
                         plan="echo first line; dd if=/dev/zero bs=1 count=1 seek=1G status=none; echo; echo last line")
    unit = f"dev/biglog-{uuid.uuid4().hex[:6]}"
    head = repo.commit({f"{unit}/main.tf": null_unit(aws.endpoint, unit, count=1)})
    executor = make_executor(settings=dataclasses.replace(settings, binaries={"terraform": str(engine)},
                                                          max_output_chars=10_000))
    before, started = peak_rss_mb(), time.monotonic()

    result = executor.execute(request(unit, "plan", head))

    assert result.status is Status.NO_CHANGES, result.message + result.output
    assert "first line" in result.output and "last line" in result.output
    assert "bytes of output not read] ..." in result.output
    assert len(result.output) < 12_000
    assert peak_rss_mb() - before < 200 and time.monotonic() - started < 30


def owned_by(uid: int, path: Path, mode: int, directory: bool = False) -> Path:
    if directory:
        path.mkdir()
    else:
        path.write_text("#!/bin/sh\nid\n")
    os.chown(path, uid, uid)
    path.chmod(mode)
    return path


@as_root
def test_a_uid_that_owns_files_in_the_shared_folders_is_not_leased_until_they_are_removed(tmp_path):
    uid, other = 250010, 250011
    space = tmp_path / "space"
    space.mkdir(mode=0o711)
    tag = uuid.uuid4().hex[:8]
    planted = owned_by(uid, Path(f"/tmp/planted-{tag}"), 0o755, directory=True)
    setuid = owned_by(uid, planted / "sh", 0o4755)  # what would run as the uid, once leased with an apply's keys
    in_shm = owned_by(uid, Path(f"/dev/shm/planted-{tag}"), 0o644)
    # in a folder another unit's uid made writable for everyone, then closed again
    shared = owned_by(other, Path(f"/tmp/shared-{tag}"), 0o777, directory=True)
    nested = owned_by(uid, shared / "sh", 0o4755)
    shared.chmod(0o700)
    immutable = owned_by(uid, Path(f"/var/tmp/immutable-{tag}"), 0o644)
    subprocess.run(["chattr", "+i", str(immutable)], check=True)
    kept = space / "pipelines-run-kept"
    running = subprocess.Popen(["sleep", "60"], user=other, group=other, extra_groups=[])  # keeps `other` taken
    try:
        # a file that cannot be removed keeps the uid from being leased
        with pytest.raises(IsolationError, match="every uid of the range is in use, or owns files that cannot be "
                                                 "removed"):
            lease_uid(uid, other, space)
        assert not planted.exists() and not in_shm.exists() and not nested.exists() and shared.exists()
        subprocess.run(["chattr", "-i", str(immutable)], check=True)
        # so does a run folder of its own left in the unit space (kept, or left by a killed pipeline)
        kept.mkdir()
        owned_by(uid, kept / "src", 0o700, directory=True)
        with pytest.raises(IsolationError, match="every uid of the range is in use"):
            lease_uid(uid, other, space)
        shutil.rmtree(kept)
        user = lease_uid(uid, other, space)
        assert user.uid == uid and not immutable.exists() and not setuid.exists()
        user.release()
    finally:
        running.kill()
        running.wait()
        subprocess.run(["chattr", "-i", str(immutable)], check=False)
        for path in (planted, shared, kept):
            shutil.rmtree(path, ignore_errors=True)
        for path in (in_shm, immutable):
            path.unlink(missing_ok=True)


@as_root
def test_a_unit_leaves_no_process_and_no_file_to_the_next_unit_of_its_uid(repo, aws, make_executor, settings,
                                                                          drop_box):
    uid, tag = 250100, uuid.uuid4().hex[:8]
    plant = f'''resource "null_resource" "plant" {{
  provisioner "local-exec" {{
    command = <<-EOT
      cp /bin/sh /tmp/planted-{tag} && chmod 4755 /tmp/planted-{tag}
      mkdir /dev/shm/planted-{tag} && touch /dev/shm/planted-{tag}/x
      setsid sleep 300 < /dev/null > /dev/null 2>&1 &
    EOT
  }}
}}
'''
    look = f'''resource "null_resource" "look" {{
  provisioner "local-exec" {{
    command = "ls /tmp/planted-{tag} /dev/shm/planted-{tag} > {drop_box}/seen 2>&1; id -u >> {drop_box}/seen"
  }}
}}
'''
    first, second = f"dev/plant-{tag}", f"dev/look-{tag}"
    head = repo.commit({f"{first}/main.tf": null_unit(aws.endpoint, first, count=0, extra=plant),
                        f"{second}/main.tf": null_unit(aws.endpoint, second, count=0, extra=look)})
    executor = make_executor(settings=dataclasses.replace(settings, unit_user=f"{uid}-{uid}"))
    try:
        planted = executor.execute(request(first, "apply", head))
        assert planted.status is Status.SUCCEEDED, planted.message + planted.output
        assert uid not in _uids_in_use()  # the process that left its session is gone with the unit

        looked = executor.execute(request(second, "apply", head))
        assert looked.status is Status.SUCCEEDED, looked.message + looked.output
        seen = (drop_box / "seen").read_text()
        assert seen.count("No such file or directory") == 2 and seen.split()[-1] == str(uid), seen
    finally:
        subprocess.run(["pkill", "-KILL", "-U", str(uid)], check=False)
        Path(f"/tmp/planted-{tag}").unlink(missing_ok=True)
        shutil.rmtree(f"/dev/shm/planted-{tag}", ignore_errors=True)


@as_root
def test_units_never_run_as_root_even_when_asked(repo, aws, make_executor, settings):
    unit = f"dev/root-{uuid.uuid4().hex[:6]}"
    head = repo.commit({f"{unit}/main.tf": null_unit(aws.endpoint, unit, count=1)})
    for spec in ("root", "0"):
        result = make_executor(settings=dataclasses.replace(settings, unit_user=spec)).execute(
            request(unit, "plan", head))
        assert result.status is Status.FAILED
        assert result.message == (f"cannot prepare the unit's run folder: PIPELINES_UNIT_USER={spec}: units must not "
                                  "run as root (uid 0) nor with its group: name another user, or a range of uids "
                                  "such as 200000-299999")
    with pytest.raises(IsolationError, match="not a range of uids"):
        resolve_unit_user("0-10")
    # unset (a run's config may unset it): as root, units still get a uid of their own
    for spec in (None, ""):
        user = resolve_unit_user(spec, settings.work_dir)
        assert user is not None and 200000 <= user.uid <= 299999 and user.lease is not None
        user.release()
