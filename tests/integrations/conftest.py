import pytest

from tests.fakes.github_fake import github_fake_fixture

github_fake = pytest.fixture(github_fake_fixture, name="github_fake")
