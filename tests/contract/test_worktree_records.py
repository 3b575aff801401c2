"""A job's worktree and branch, the same on every store (SQLite and PostgreSQL)."""

from __future__ import annotations

from expeditor.state import CampaignStore, DispatchStatus, Owner

ME = Owner.current()


def _claim(store: CampaignStore, *, force: bool = False) -> int:
    claim = store.claim(
        "camp", "job", recipe="implementation", inputs={"task": "x"}, caller_session_id=None, owner=ME, force=force
    )
    return claim.attempt


def test_the_worktree_and_branch_of_an_attempt_are_kept_with_the_job(store: CampaignStore) -> None:
    attempt = _claim(store)
    assert store.get("camp", "job").worktree is None  # type: ignore[union-attr]
    running = store.mark_running(
        "camp", "job", attempt=attempt, dispatched_session_id="s1", worktree="/wt/camp/job", branch="expeditor/camp/job"
    )
    assert (running.worktree, running.branch) == ("/wt/camp/job", "expeditor/camp/job")
    done = store.mark_succeeded("camp", "job", attempt=attempt, summary="done")
    assert (done.worktree, done.branch) == ("/wt/camp/job", "expeditor/camp/job")
    [listed] = store.list("camp", status=DispatchStatus.SUCCESS)
    assert (listed.worktree, listed.branch) == ("/wt/camp/job", "expeditor/camp/job")
    restored = store.restore_dispatch(done)
    assert (restored.worktree, restored.branch) == ("/wt/camp/job", "expeditor/camp/job")


def test_an_attempt_without_isolation_records_no_worktree(store: CampaignStore) -> None:
    attempt = _claim(store)
    store.mark_running("camp", "job", attempt=attempt, dispatched_session_id="s1", worktree="/wt", branch="b")
    store.mark_failed("camp", "job", attempt=attempt, error="boom")
    again = _claim(store)
    running = store.mark_running("camp", "job", attempt=again, dispatched_session_id="s2")
    assert (running.worktree, running.branch) == (None, None)
