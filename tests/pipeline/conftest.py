import pytest

from tests.fakes.github_fake import GitHubFake

GH_REPO = "acme/infrastructure-live"


@pytest.fixture
def github(monkeypatch):
    """The GitHub fake with the repository, and the client's environment pointed at it."""
    with GitHubFake() as fake:
        fake.add_repo(GH_REPO)
        monkeypatch.setenv("GITHUB_API_URL", fake.url)
        monkeypatch.setenv("GITHUB_TOKEN", fake.token)
        yield fake
