"""Campaign state: dispatch records, runs and pipeline steps, behind the ``CampaignStore`` protocol."""

from expeditor.state.models import (
    LEGAL_TRANSITIONS,
    Budget,
    Claim,
    ClaimAction,
    DispatchRecord,
    DispatchStatus,
    Owner,
    RunEvidence,
    RunRecord,
    RunStatus,
    StepExecution,
    StepStatus,
    check_transition,
    inputs_hash,
)
from expeditor.state.opening import open_store
from expeditor.state.sqlite import SqliteCampaignStore
from expeditor.state.store import CampaignStore, OnLaunchHook

__all__ = [
    "LEGAL_TRANSITIONS",
    "Budget",
    "CampaignStore",
    "Claim",
    "ClaimAction",
    "DispatchRecord",
    "DispatchStatus",
    "OnLaunchHook",
    "Owner",
    "RunEvidence",
    "RunRecord",
    "RunStatus",
    "SqliteCampaignStore",
    "StepExecution",
    "StepStatus",
    "check_transition",
    "inputs_hash",
    "open_store",
]
