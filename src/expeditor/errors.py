"""Every error expeditor raises on purpose, grouped by how a caller reacts to it.

    ExpeditorError
    ├── InvalidInput          the caller asked for something malformed or forbidden: fix the request
    │   ├── InvalidIdentifier a session id or label that cannot become a file name
    │   ├── RecipeError       a recipe is malformed, unknown, or cannot run with the values given
    │   │                     (defined beside the recipes, ``expeditor.recipes.problems``: it carries their problems)
    │   └── Unusable          the request is well formed, but what it names does not exist or cannot be used
    │                         as it is (an unknown recipe, a recipe file with problems): fix the name or the
    │                         thing named. The command line exits 1 for it, 2 for any other InvalidInput
    │       └── BudgetSpent   the campaign or job has spent its budget: nothing was launched; raise the budget
    ├── LaunchFailed          expeditor's own installation cannot launch a session (its bundled plugin is
    │                         missing): reinstall. An agent command that cannot start is no error but a run
    │                         that ends as ``launch_failed``, with the reason in its result
    ├── StoreUnavailable      the campaign store could not be read or written: retry later
    │   └── ClaimRefused      a dispatch's claim could not be written, so nothing was launched: retry the dispatch
    ├── IllegalTransition     a record cannot move from its status to the one asked: re-read it, do not retry as is
    │   └── StaleAttempt      a write carried an attempt number that is no longer current: another claimer owns the job
    └── ScenarioError         the fake agent's scenario is malformed (testing only)

Foreign exceptions (OSError, psutil.Error, sqlite3.Error) are translated where they enter
our code, with ``raise ... from exc``, so a traceback keeps the original cause.
"""

from __future__ import annotations

__all__ = [
    "BudgetSpent",
    "ClaimRefused",
    "ExpeditorError",
    "IllegalTransition",
    "InvalidIdentifier",
    "InvalidInput",
    "LaunchFailed",
    "ScenarioError",
    "StaleAttempt",
    "StoreUnavailable",
    "Unusable",
]


class ExpeditorError(Exception):
    """Base of every error expeditor raises on purpose."""


class InvalidInput(ExpeditorError):
    """A request was malformed or forbidden; the message says what was expected."""


class InvalidIdentifier(InvalidInput):
    """A session id or label contains characters that cannot be part of a file name."""


class Unusable(InvalidInput):
    """What a well-formed request names does not exist or cannot be used as it is."""


class BudgetSpent(Unusable):
    """A campaign or job has spent its budget, so nothing more of it is launched; the message gives both figures."""


class LaunchFailed(ExpeditorError):
    """expeditor's installation cannot launch a session: the message says what is missing."""


class StoreUnavailable(ExpeditorError):
    """The campaign store could not be read or written."""


class ClaimRefused(StoreUnavailable):
    """A dispatch's claim could not be written, so nothing was launched; retrying may succeed."""


class IllegalTransition(ExpeditorError):
    """A record was asked to move to a status it cannot reach from its current one."""


class StaleAttempt(IllegalTransition):
    """A write was fenced off: its attempt number is older than the record's."""


class ScenarioError(ExpeditorError):
    """A fake agent scenario is malformed."""
