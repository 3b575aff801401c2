"""Settings: read once from the environment (``EXPEDITOR_*``) and ``<home>/config.yaml``, then passed down.

Precedence, highest first: explicit keyword arguments (CLI flags), environment variables,
``<home>/config.yaml``, the defaults below. Nothing below reads ``os.environ`` after load.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, InitSettingsSource, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from expeditor.config_file import YamlFileSource, home_from
from expeditor.config_shared_store import SharedStoreSettings
from expeditor.homes import STATE_FILE_NAME, default_home
from expeditor.model_names import MODEL_ALIASES, validate_model

__all__ = ["MODEL_ALIASES", "RunPolicy", "Settings", "load_settings", "validate_model"]

# The timings one run obeys: Settings holds them with their defaults, RunPolicy as resolved for one
# call. Each is declared once, here, so a bound or a description cannot differ between the two.
_StaleThreshold = Annotated[
    float, Field(gt=0, le=86400, description="Transcript silence after which a session is stale, seconds.")
]
_IdleTimeout = Annotated[
    float, Field(gt=0, le=86400, description="Stdout silence after which a session is an idle stall, seconds.")
]
_PollInterval = Annotated[float, Field(gt=0, le=60, description="Transcript poll interval, seconds.")]
_ChildrenInterval = Annotated[float, Field(gt=0, le=300, description="Child-activity sample interval, seconds.")]
_ChildrenCpuFloor = Annotated[
    float, Field(ge=0, le=64, description="Cores of CPU, averaged over the interval, that count as activity.")
]
_MarkerFreshness = Annotated[
    float, Field(gt=0, le=86400, description="A marker not touched for this long is ignored, seconds.")
]
_MaxSuppressionSeconds = Annotated[
    float,
    Field(
        gt=0,
        le=30 * 86400,
        description="Longest continuous suppression by a marker without expires_at, seconds (markers with one "
        "are bounded by the longest call instead).",
    ),
]
_MarkersEnabled = Annotated[
    bool, Field(description="Whether execution markers may suppress a verdict; false only to prove what they do.")
]
_MAX_KILL_GRACE = 600
_KillGrace = Annotated[float, Field(ge=0, le=_MAX_KILL_GRACE, description="SIGTERM to SIGKILL grace, seconds.")]
_ResultExitGrace = Annotated[
    float, Field(ge=0, le=600, description="How long a session may take to exit after its result event.")
]
# The longest call expeditor allows bounds dispatch_timeout, and a run's timeout: a run_skill's, a dispatch's
# or the call's own.
_LONGEST_CALL = 30 * 86400


class RunPolicy(BaseModel):
    """The timings that govern one managed run, resolved from settings and per-call overrides."""

    model_config = ConfigDict(frozen=True)

    timeout: float = Field(gt=0, le=_LONGEST_CALL, description="Wall-clock limit of the run, seconds.")
    stale_threshold: _StaleThreshold
    idle_timeout: _IdleTimeout
    poll_interval: _PollInterval
    children_interval: _ChildrenInterval
    children_cpu_floor: _ChildrenCpuFloor
    marker_freshness: _MarkerFreshness
    max_suppression_seconds: _MaxSuppressionSeconds
    longest_call: float = Field(
        gt=0,
        le=_LONGEST_CALL + _MAX_KILL_GRACE,
        description="The longest call expeditor allows, seconds: the larger of this run's timeout and "
        "dispatch_timeout, plus kill_grace. No marker vouches past its started_at plus this, whatever its "
        "expires_at says.",
    )
    markers_enabled: _MarkersEnabled
    kill_grace: _KillGrace
    result_exit_grace: _ResultExitGrace


class Settings(SharedStoreSettings):
    """Every knob expeditor has. Each is also the environment variable ``EXPEDITOR_<NAME>``."""

    # An empty variable is unset: EXPEDITOR_HOME="" would otherwise make the working directory the home.
    model_config = SettingsConfigDict(env_prefix="EXPEDITOR_", env_ignore_empty=True, frozen=True, extra="forbid")

    home: Path = Field(
        default_factory=default_home,
        description="Directory for config.yaml, state.sqlite3, markers/, sessions/, recipes/ and logs/ (default: "
        "a per-user state directory keyed by project, e.g. ~/.local/state/expeditor/<project>-<hash>).",
    )
    marker_dir: Path | None = Field(
        default=None, description="Shared directory of execution markers (default: <home>/markers)."
    )
    claude_command: str = Field(
        default="claude",
        min_length=1,
        description="The agent command, split as a shell splits words; expeditor appends its own flags.",
    )
    claude_config_dir: Path = Field(
        default_factory=lambda: Path.home() / ".claude",
        validation_alias=AliasChoices("EXPEDITOR_CLAUDE_CONFIG_DIR", "CLAUDE_CONFIG_DIR", "claude_config_dir"),
        description="Where Claude Code keeps transcripts ($CLAUDE_CONFIG_DIR, else ~/.claude).",
    )
    default_model: str | None = Field(
        default=None, description="Model used when a call names none (default: the CLI's own default)."
    )
    model_prices: dict[str, tuple[float, float, float, float]] = Field(
        default_factory=dict,
        description="USD per million tokens (input, output, cache read, cache write) by model id prefix, over the "
        "built-in table: prices the runs that died before reporting their cost (estimates).",
    )
    permission_mode: str = Field(
        default="acceptEdits",
        pattern=r"^(default|acceptEdits|bypassPermissions|plan|dontAsk)$",
        description="Claude Code --permission-mode for launched sessions.",
    )
    bundled_skills: bool = Field(
        default=True,
        description=(
            "Give every launched session expeditor's bundled skills (--plugin-dir), as /expeditor:<skill>; "
            "the bundled recipes' steps need them."
        ),
    )
    timeout: float = Field(default=7200, gt=0, le=7 * 86400, description="Wall-clock limit of a run_skill.")
    # A field typed _Name is a RunPolicy field too: its bound and description are declared once, above.
    stale_threshold: _StaleThreshold = 1200
    idle_timeout: _IdleTimeout | None = Field(
        default=None, description="Unset, it follows the stale threshold in effect."
    )
    poll_interval: _PollInterval = 0.5
    children_interval: _ChildrenInterval = 5
    children_cpu_floor: _ChildrenCpuFloor = 0.05
    marker_heartbeat_interval: float = Field(
        default=10, gt=0, le=3600, description="How often a held execution marker is touched, seconds."
    )
    marker_freshness: _MarkerFreshness = 30
    run_progress_interval: float = Field(
        default=30,
        gt=0,
        le=3600,
        description="How often, at most, a running run's usage so far is pushed to the campaign store, seconds.",
    )
    max_suppression_seconds: _MaxSuppressionSeconds = 3600
    kill_grace: _KillGrace = 3
    result_exit_grace: _ResultExitGrace = 2
    shutdown_grace: float = Field(
        default=0.05, ge=0, le=60, description="SIGTERM to SIGKILL grace when the server itself shuts down."
    )
    progress_interval: float = Field(
        default=30, gt=0, le=600, description="Progress notifications during a long tool call, seconds."
    )
    mcp_tasks: bool = Field(default=True, description="Serve run_skill and dispatch as MCP tasks to clients asking.")
    task_poll_interval: float = Field(default=2, ge=0.25, le=30, description="How often task clients poll, seconds.")
    task_retention: float = Field(default=3600, gt=0, description="How long a finished MCP task is kept, seconds.")
    dispatch_timeout: float = Field(
        default=14400, gt=0, le=_LONGEST_CALL, description="Wall-clock limit of a dispatched job."
    )
    max_concurrent_dispatches: int = Field(default=4, ge=1, le=1024, description="Dispatches run at once.")
    markers_enabled: _MarkersEnabled = True
    measure_loc: bool = Field(
        default=True, description="Measure lines changed per run with git, for the token efficiency report."
    )
    containment: Literal["auto", "cgroup", "tree"] = Field(
        default="auto",
        description="What holds a session's processes for the kill: its own cgroup v2 group (nothing escapes it; "
        "needs a writable group, e.g. root), the process tree (group, snapshot, environment tag), or auto: a "
        "cgroup when the machine allows one, else the tree.",
    )
    allowed_roots: Annotated[tuple[Path, ...], NoDecode] = Field(
        default_factory=lambda: (Path.cwd(),),
        min_length=1,
        description="A cwd outside these directories is refused (in the environment: separated by ':').",
    )
    http_host: str = Field(default="127.0.0.1", min_length=1, description="Bind address of the HTTP transport.")
    http_port: int = Field(default=8765, ge=1, le=65535, description="Port of the HTTP transport.")
    http_token: str | None = Field(
        default=None,
        description="Bearer token required over HTTP, if set; a bind other than loopback refuses to start without "
        "one (unless --insecure-no-token).",
    )
    http_allowed_hosts: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        max_length=64,
        description="Host header values the HTTP transport accepts besides its bind address and port (and loopback "
        "names on a loopback bind): 'name' admits it on any port, 'name:port' on that port only (in the "
        "environment: separated by ',').",
    )
    http_allowed_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        max_length=64,
        description="Origin header values the HTTP transport accepts besides its own and, on a loopback bind, "
        "loopback ones: 'https://name' admits it on any port, 'https://name:port' on that port only (in the "
        "environment: separated by ',').",
    )
    log_max_bytes: int = Field(
        default=10 * 1024 * 1024, ge=1024, description="Size at which <home>/logs/expeditor.log is rotated, bytes."
    )
    log_backup_count: int = Field(
        default=5, ge=1, le=1000, description="Rotated log files kept (expeditor.log.1 is the newest)."
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The default home is resolved once here (it asks git), and config.yaml is read from it.
        home = home_from(init_settings(), env_settings())
        default = InitSettingsSource(settings_cls, {"home": home})
        return (init_settings, env_settings, default, YamlFileSource(settings_cls, home))

    @field_validator("allowed_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: Any) -> Any:
        if isinstance(value, str | Path):
            return tuple(Path(part) for part in str(value).split(os.pathsep) if part)
        return value

    @field_validator("http_allowed_hosts", "http_allowed_origins", mode="before")
    @classmethod
    def _split_names(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("http_allowed_hosts")
    @classmethod
    def _host_header_values(cls, hosts: tuple[str, ...]) -> tuple[str, ...]:
        for host in hosts:
            _check_authority(host)
        return hosts

    @field_validator("http_allowed_origins")
    @classmethod
    def _origin_header_values(cls, origins: tuple[str, ...]) -> tuple[str, ...]:
        for origin in origins:
            scheme, separator, authority = origin.partition("://")
            if scheme not in ("http", "https") or not separator:
                raise ValueError(f"{origin!r} is not an origin: expected e.g. https://expeditor.example.com")
            _check_authority(authority)
        return origins

    @field_validator("default_model")
    @classmethod
    def _known_model(cls, value: str | None) -> str | None:
        return None if value is None else validate_model(value)

    @field_validator("claude_command")
    @classmethod
    def _splittable(cls, value: str) -> str:
        try:
            words = shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"cannot be split into words: {exc}") from exc
        if not words:
            raise ValueError("is empty after splitting into words")
        return value

    @model_validator(mode="after")
    def _absolute_paths(self) -> Settings:
        home = self.home.expanduser().absolute()
        object.__setattr__(self, "home", home)
        marker_dir = (self.marker_dir or home / "markers").expanduser().absolute()
        object.__setattr__(self, "marker_dir", marker_dir)
        object.__setattr__(self, "claude_config_dir", self.claude_config_dir.expanduser().absolute())
        roots = tuple(root.expanduser().resolve() for root in self.allowed_roots)
        object.__setattr__(self, "allowed_roots", roots)
        return self

    @property
    def markers_path(self) -> Path:
        """The marker directory, always set after validation."""
        assert self.marker_dir is not None
        return self.marker_dir

    @property
    def longest_call(self) -> float:
        """The longest call these settings allow, kill grace included: the bound on every marker's trust.

        A run's own figure (``RunPolicy.longest_call``) also counts its per-call timeout.
        """
        return max(self.timeout, self.dispatch_timeout) + self.kill_grace

    @property
    def sessions_dir(self) -> Path:
        return self.home / "sessions"

    @property
    def git_objects_cache(self) -> Path:
        """Where measuring lines changed writes git objects, so the user's repository gets none."""
        return self.home / "cache" / "git-objects"

    @property
    def state_path(self) -> Path:
        return self.home / STATE_FILE_NAME

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def recipes_dir(self) -> Path:
        return self.home / "recipes"

    @property
    def claude_argv(self) -> list[str]:
        """``claude_command`` split as a shell splits words."""
        return shlex.split(self.claude_command)

    def run_policy(
        self,
        *,
        timeout: float | None = None,
        stale_threshold: float | None = None,
        idle_timeout: float | None = None,
    ) -> RunPolicy:
        """The timings of one run: per-call overrides on top of these settings.

        The stdout idle timeout follows the stale threshold in effect unless set explicitly,
        so a step's larger threshold is not undercut by a smaller global stdout limit. The longest call
        bounds the markers that vouch for this run: a dispatch it waits on may run for dispatch_timeout.
        """
        stale = stale_threshold if stale_threshold is not None else self.stale_threshold
        if idle_timeout is not None:
            idle = idle_timeout
        elif stale_threshold is None and self.idle_timeout is not None:
            idle = self.idle_timeout
        else:
            idle = stale
        run_timeout = timeout if timeout is not None else self.timeout
        return RunPolicy(
            timeout=run_timeout,
            stale_threshold=stale,
            idle_timeout=idle,
            poll_interval=self.poll_interval,
            children_interval=self.children_interval,
            children_cpu_floor=self.children_cpu_floor,
            marker_freshness=self.marker_freshness,
            max_suppression_seconds=self.max_suppression_seconds,
            longest_call=max(run_timeout, self.dispatch_timeout) + self.kill_grace,
            markers_enabled=self.markers_enabled,
            kill_grace=self.kill_grace,
            result_exit_grace=self.result_exit_grace,
        )


def _check_authority(authority: str) -> None:
    """Refuse what a Host header never carries, so a typo fails at start rather than as refused requests."""
    if not authority or any(char.isspace() or char in "/?#@" for char in authority):
        raise ValueError(f"{authority!r} is not a host name: expected a name, optionally with :port")
    after_address = authority.rpartition("]")[2] if authority.startswith("[") else authority
    _, has_port, port = after_address.partition(":")
    if ":" in port:
        raise ValueError(f"{authority!r}: write an IPv6 address in brackets, e.g. [fd00::1]")
    if has_port and not (port == "*" or (port.isdigit() and 0 < int(port) < 65536)):
        raise ValueError(f"{authority!r}: the port must be a number or '*'")


def load_settings(**overrides: Any) -> Settings:
    """Read settings once: keyword overrides, then ``EXPEDITOR_*`` variables, then ``<home>/config.yaml``."""
    clean = {key: value for key, value in overrides.items() if value is not None}
    return Settings(**clean)
