"""Test support shipped with the package: the fake agent, a real executable that behaves like ``claude -p``."""

__all__: list[str] = []
