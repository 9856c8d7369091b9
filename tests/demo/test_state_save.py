"""The demo's Terraform states carried across restarts (`Aws.save_states`/`restore_states`) against a real moto
server: a save never goes back to an older state, keeps a state of another lineage, and replaces each file
whole. (moto keeps its data per process, not per server: each test has an account of its own.)"""

import json
import zlib
from pathlib import Path

import pytest

from pipelines_dagster.demo.aws import Aws, state_bucket

KEY = "prod/us-east-1/prod/app/terraform.tfstate"


def _state(serial: int, lineage: str = "5e1f0c2a-0000-4000-8000-000000000001", resources: int = 2) -> bytes:
    """A Terraform state as Terraform 1.0.3 writes it, with `resources` null resources."""
    return json.dumps({"version": 4, "terraform_version": "1.0.3", "serial": serial, "lineage": lineage,
                       "outputs": {}, "resources": [{"mode": "managed", "type": "null_resource", "name": "app",
                                                     "instances": [{"index_key": i} for i in range(resources)]}]},
                      indent=2).encode()


class Emulator:
    """One account of the AWS emulator."""

    def __init__(self, endpoint: str, account: str):
        self.aws, self.account = Aws(endpoint), account
        self.aws.prepare_account(account)

    def put(self, body: bytes, key: str = KEY) -> None:
        self.aws.client("s3", self.account).put_object(Bucket=state_bucket(self.account), Key=key, Body=body)

    def keys(self) -> list[str]:
        listing = self.aws.client("s3", self.account).list_objects_v2(Bucket=state_bucket(self.account))
        return [o["Key"] for o in listing.get("Contents", [])]

    def save(self, folder: Path):
        return self.aws.save_states([self.account], folder)

    def restore(self, folder: Path) -> int:
        return self.aws.restore_states([self.account], folder)

    def saved(self, folder: Path, key: str = KEY) -> dict:
        return json.loads((folder / self.account / key).read_text())


@pytest.fixture
def emulator(moto_endpoint, request) -> Emulator:
    """The session's emulator, in an account of the test's own."""
    return Emulator(moto_endpoint, f"{zlib.crc32(request.node.name.encode()) % 10**12:012d}")


def test_a_save_never_replaces_a_newer_state_with_an_older_one(tmp_path, emulator):
    folder = tmp_path / "aws-states"
    emulator.put(_state(1))
    assert emulator.save(folder).count == 1
    # The two demos on one folder: both emulators start from that save; the first applies (serial 2) and
    # saves; the second, stale, saves when it stops, last.
    emulator.put(_state(2, resources=3))
    assert emulator.save(folder).written == [f"{emulator.account}/{KEY}"]
    emulator.put(_state(1))
    stale = emulator.save(folder)

    assert emulator.saved(folder)["serial"] == 2 and len(emulator.saved(folder)["resources"][0]["instances"]) == 3
    assert stale.written == [] and stale.count == 1
    assert stale.notes == [f"kept the saved state of {emulator.account}/{KEY} (serial 2): the emulator's is older "
                           "(serial 1)"], stale.notes
    # and forward it goes: a newer serial of the same lineage replaces the saved one
    emulator.put(_state(3, resources=1))
    assert emulator.save(folder).notes == []
    assert emulator.saved(folder)["serial"] == 3


def test_a_state_of_another_lineage_is_saved_and_the_one_it_replaces_is_kept_beside(tmp_path, emulator):
    folder = tmp_path / "aws-states"
    emulator.put(_state(7, lineage="aaaaaaaa-old"))
    emulator.save(folder)
    emulator.put(_state(1, lineage="bbbbbbbb-new"))  # the state made anew (a lower serial, not an older state)

    saved = emulator.save(folder)

    assert (emulator.saved(folder)["lineage"], emulator.saved(folder)["serial"]) == ("bbbbbbbb-new", 1)
    aside = tmp_path / "aws-states.replaced" / emulator.account / f"{KEY}.aaaaaaaa-old.7"
    assert json.loads(aside.read_text())["serial"] == 7
    assert len(saved.notes) == 1 and "another lineage" in saved.notes[0] and str(aside) in saved.notes[0]
    assert emulator.save(folder).notes == []  # said once
    # what is kept aside is not put back into the emulator by the next start
    assert emulator.restore(folder) == 1


def test_a_save_replaces_each_file_whole_by_a_rename(tmp_path, emulator):
    """A reader of the saved file (the next start, a person) sees the old state or the new one, never a part:
    the new one is written beside it and renamed over it; what an interrupted save leaves is never restored."""
    folder = tmp_path / "aws-states"
    emulator.put(_state(1))
    emulator.save(folder)
    target = folder / emulator.account / KEY
    with target.open("rb") as before:
        emulator.put(_state(2, resources=40))
        emulator.save(folder)
        old_view = before.read()

    assert json.loads(old_view)["serial"] == 1  # written in place, the open file would show the new bytes
    assert emulator.saved(folder)["serial"] == 2
    assert sorted(p.name for p in target.parent.iterdir()) == ["terraform.tfstate"]  # no temporary file left
    # a temporary file left by a save that was killed is not an object of the emulator's bucket
    (target.parent / ".terraform.tfstate.k1ll3d.saving").write_bytes(_state(9)[:50])
    assert emulator.restore(folder) == 1
    assert emulator.keys() == [KEY]

