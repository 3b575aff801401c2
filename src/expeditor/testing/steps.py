"""Running a scenario's steps, in order, against the session's outputs.

Each step kind is one ``case`` below; pyright's exhaustiveness check (``assert_never``) names the
missing case when a kind is added to the scenario's union.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, assert_never

from expeditor.testing.channels import InvocationLog, now_iso
from expeditor.testing.conversation import BUDGET_STOP_SUBTYPE, Conversation
from expeditor.testing.marker_step import MarkerStep, hold_marker
from expeditor.testing.mcp_call import McpServer, ToolOutcome, call_tool, permitted
from expeditor.testing.scenario import (
    AssistantStep,
    BurnCpuStep,
    CallToolStep,
    ExitStep,
    HangStep,
    RawStdoutStep,
    ResultStep,
    Scenario,
    SleepStep,
    SpawnStep,
    StderrStep,
    StdoutOnlyStep,
    Step,
    TextBlock,
    Tick,
    TickStep,
    ToolCall,
    ToolResultStep,
    ToolUseBlock,
    TranscriptOnlyStep,
    WriteFileStep,
)
from expeditor.testing.sleeper import burn
from expeditor.testing.spawning import Child, spawn, wait_for

__all__ = ["Runtime", "run_steps"]


@dataclass
class Runtime:
    """What the steps act on besides the conversation: the log, MCP servers, permission rules."""

    conversation: Conversation
    log: InvocationLog
    mcp_servers: dict[str, McpServer] = field(default_factory=dict[str, McpServer])
    allow: list[str] = field(default_factory=list[str])
    deny: list[str] = field(default_factory=list[str])
    bypass_permissions: bool = False
    children: list[Child] = field(default_factory=list[Child])


def run_steps(scenario: Scenario, runtime: Runtime) -> int:
    """Run every step; returns the exit code (an ``exit`` step's, else the scenario's)."""
    conversation = runtime.conversation
    for step in scenario.steps:
        code = _run(step, runtime)
        if code is not None:
            return code
        if isinstance(step, AssistantStep | CallToolStep) and conversation.budget_reached():
            conversation.result()  # the budget stop: 2.1.332 ends the session after the turn that reached it
            return 1
    return scenario.exit_code


def _run(step: Step, rt: Runtime) -> int | None:
    conversation, out = rt.conversation, rt.conversation.out
    match step:
        case AssistantStep(assistant=reply):
            conversation.assistant(
                [_block(block) for block in reply.content],
                reply.usage.tokens(),
                message_id=reply.id,
                model=reply.model,
                stop_reason=reply.stop_reason,
            )
        case ToolResultStep(tool_result=answer):
            tool_use_id = answer.tool_use_id or conversation.last_tool_use_id or f"toolu_{uuid.uuid4().hex[:24]}"
            conversation.tool_result(
                tool_use_id, answer.content, is_error=answer.is_error, tool_use_result=answer.content
            )
        case SleepStep(sleep=seconds):
            time.sleep(seconds)
        case TranscriptOnlyStep(transcript_only=lines):
            for line in lines:
                out.transcript_line(line)
        case StdoutOnlyStep(stdout_only=lines):
            for line in lines:
                out.stdout_line(line)
        case TickStep(tick=tick):
            _tick(tick, conversation)
        case StderrStep(stderr=text):
            out.stderr(text)
        case RawStdoutStep(raw_stdout=raw):
            # surrogateescape: \udc80-\udcff in the text are the bytes 0x80-0xff, which need not be UTF-8.
            out.stdout((raw.text * raw.repeat + ("\n" if raw.newline else "")).encode(errors="surrogateescape"))
        case SpawnStep(spawn=options):
            children = spawn(options, rt.log)
            rt.children.extend(children)
            if options.wait:
                wait_for(children)
        case BurnCpuStep(burn_cpu=seconds):
            burn(seconds)
        case CallToolStep(call_tool=call):
            _call_tool(call, rt)
        case ResultStep(result=spec):
            ended = conversation.result(
                text=spec.text,
                is_error=spec.is_error,
                subtype=spec.subtype,
                usage=spec.usage.tokens() if spec.usage else None,
                num_turns=spec.num_turns,
                cost=spec.cost_usd,
                structured_output=spec.structured_output,
            )
            if ended["subtype"] == BUDGET_STOP_SUBTYPE:
                return 1
        case WriteFileStep(write_file=write):
            target = Path.cwd() / write.path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(write.text)
        case ExitStep(exit=code):
            return code
        case HangStep():
            while True:
                time.sleep(3600)
        case MarkerStep(marker=spec):
            hold_marker(spec, conversation.session_id)
        case _:
            assert_never(step)
    return None


def _block(block: TextBlock | ToolUseBlock) -> dict[str, Any]:
    if isinstance(block, TextBlock):
        return {"type": "text", "text": block.text}
    tool = block.tool_use
    return {"type": "tool_use", "id": tool.id, "name": tool.name, "input": tool.input}


def _tick(tick: Tick, conversation: Conversation) -> None:
    """Small lines on a fixed schedule (deadlines from one start, so the rate does not drift)."""
    start = time.monotonic()
    seq = 0
    while (due := start + seq * tick.interval) <= start + tick.duration:
        if (delay := due - time.monotonic()) > 0:
            time.sleep(delay)
        line: dict[str, Any] = {
            "type": "system",
            "subtype": "fake_tick",
            "seq": seq,
            "uuid": str(uuid.uuid4()),
        }
        if tick.to in ("stdout", "both"):
            conversation.out.stdout_line({**line, "session_id": conversation.session_id})
        if tick.to in ("transcript", "both"):
            conversation.out.transcript_line(
                {
                    **line,
                    "sessionId": conversation.session_id,
                    "cwd": conversation.cwd,
                    "timestamp": now_iso(),
                }
            )
        seq += 1


def _call_tool(call: ToolCall, rt: Runtime) -> None:
    """The model asks for an MCP tool; the CLI refuses it, or runs it and sends the answer back."""
    conversation = rt.conversation
    name = f"mcp__{call.server}__{call.tool}"
    tool_use = {"type": "tool_use", "name": name, "input": call.arguments}
    (tool_use_id,) = conversation.assistant([tool_use], call.usage.tokens())
    server = rt.mcp_servers.get(call.server)
    if server is None:
        text = f"Error: No such tool available: {name}"
        conversation.out.stderr(f"fake agent: {text} (no server {call.server!r} in --mcp-config)")
        conversation.tool_result(tool_use_id, text, is_error=True, tool_use_result=text)
        return
    if not permitted(name, allow=rt.allow, deny=rt.deny, bypass=rt.bypass_permissions):
        conversation.permission_denied(name, tool_use_id, call.arguments)
        return

    def deliver(outcome: ToolOutcome) -> None:
        if outcome.is_error:
            conversation.out.stderr(f"fake agent: {name}: {outcome.text}")
        conversation.tool_result(
            tool_use_id,
            outcome.text,
            is_error=True if outcome.is_error else None,
            tool_use_result={"content": outcome.text, "structuredContent": outcome.structured},
        )

    call_tool(
        server,
        call.tool,
        call.arguments,
        session_id=conversation.session_id,
        cwd=conversation.cwd,
        timeout=call.timeout,
        deliver=deliver,
    )
