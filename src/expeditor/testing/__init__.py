"""Test support shipped with the package: the fake agent, a real executable that behaves like ``claude -p``.

Only standard-library helpers are imported here: ``python -m expeditor.testing.fake_agent`` runs this
file first, and the fake agent's start-up time matters to every test that launches it.
"""

from expeditor.testing.launch import (
    fake_agent_command,
    fake_agent_env,
    launched_prompts,
    read_invocation_log,
    stream_events,
    transcript_path,
)

__all__ = [
    "fake_agent_command",
    "fake_agent_env",
    "launched_prompts",
    "read_invocation_log",
    "stream_events",
    "transcript_path",
]
