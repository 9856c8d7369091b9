"""What the GitHub client returns: plain records of the fields the pipeline reads, built from PyGithub's objects
without fetching them again."""

from dataclasses import dataclass


@dataclass(frozen=True)
class PullRequestInfo:
    number: int
    title: str
    state: str
    head_ref: str
    head_sha: str
    head_repo: str | None  # full name; None when the fork was deleted
    base_ref: str
    base_sha: str
    base_repo: str
    user: str
    html_url: str
    merged: bool
    merge_commit_sha: str | None
    draft: bool
    body: str | None = None

    @property
    def is_fork(self) -> bool:
        """From another repository than the one it targets (or from a deleted fork)."""
        return self.head_repo is None or self.head_repo.lower() != self.base_repo.lower()



@dataclass(frozen=True)
class CommentInfo:
    id: int
    body: str
    html_url: str
    created: bool = False   # this call created it
    updated: bool = False   # this call changed it



@dataclass(frozen=True)
class IssueInfo:
    number: int
    title: str
    state: str
    body: str | None
    html_url: str
    labels: tuple[str, ...]
    created: bool = False
    updated: bool = False



@dataclass(frozen=True)
class StatusInfo:
    context: str
    state: str
    description: str | None
    target_url: str | None



def pull_request_info(pr) -> PullRequestInfo:
    # Only fields of GitHub's list shape ("pull-request-simple"): anything else makes PyGithub fetch the PR again.
    head_repo = pr.head.repo
    return PullRequestInfo(
        number=pr.number, title=pr.title, state=pr.state, head_ref=pr.head.ref, head_sha=pr.head.sha,
        head_repo=head_repo.full_name if head_repo is not None else None, base_ref=pr.base.ref,
        base_sha=pr.base.sha, base_repo=pr.base.repo.full_name, user=pr.user.login if pr.user else "",
        html_url=pr.html_url, merged=pr.merged_at is not None, merge_commit_sha=pr.merge_commit_sha,
        draft=bool(pr.draft), body=pr.body)



def issue_info(issue, created: bool = False, updated: bool = False) -> IssueInfo:
    return IssueInfo(number=issue.number, title=issue.title, state=issue.state, body=issue.body,
                     html_url=issue.html_url, labels=tuple(label.name for label in issue.labels),
                     created=created, updated=updated)
