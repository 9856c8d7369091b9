import pytest
from dagster._core.definitions.definitions_load_context import DefinitionsLoadContext

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


@pytest.fixture(autouse=True)
def fresh_definitions_load():
    """Dagster keeps the last definitions-load context (with its recorded lineage state) in a class attribute; a
    code server or run worker loads once per process, but tests load many repositories in one: each starts afresh."""
    DefinitionsLoadContext._instance = None
    yield
    DefinitionsLoadContext._instance = None
