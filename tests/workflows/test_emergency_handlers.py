"""EmergencyOverrideWorkflow's update validators and failure paths, isolated by fake activities."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import (
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateStage,
)
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from test_emergency_support import (
    emergency_input,
    fresh_ids,
    record_history,
    register_search_attributes,
)

from workflows.emergency import EmergencyOverrideWorkflow
from workflows.emergency_types import (
    ACTIVATE,
    DEACTIVATE,
    EXTEND,
    READ_SPEND,
    ActivateInput,
    Activation,
    CancelRequest,
    DeactivateInput,
    Deactivation,
    EmergencyPhase,
    EmergencyStatus,
    EndReason,
    ExtendInput,
    ExtendRequest,
    ExtendResult,
    SelectedNodeInfo,
    SpendInput,
    SpendReading,
)


class FakeStore:
    """Same-name activities that keep nothing; gates let a test hold a step open."""

    def __init__(self) -> None:
        self.activate_gate = asyncio.Event()
        self.deactivate_gate = asyncio.Event()
        self.activate_gate.set()
        self.deactivate_gate.set()
        self.refuse_activation: ApplicationError | None = None

    def all(self) -> list[Callable[..., Any]]:
        """The fake activities for the worker."""

        @activity.defn(name=ACTIVATE)
        async def activate(data: ActivateInput) -> Activation:
            await self.activate_gate.wait()
            if self.refuse_activation is not None:
                raise self.refuse_activation
            return Activation(
                coordination_id=data.coordination_id,
                selected_node=SelectedNodeInfo(
                    node_id="stripe_premium_emergency",
                    provider_name="Stripe Premium Emergency",
                    region="us-east-1",
                    success_rate=99.9,
                    cost_per_request=0.15,
                    health_score=98,
                ),
                routing_strategy="HYBRID_OPTIMIZATION",
                confidence_score=98,
                estimated_cost=0.15,
                started_at=data.started_at,
                deadline=data.deadline,
            )

        @activity.defn(name=EXTEND)
        async def extend(data: ExtendInput) -> ExtendResult:
            return ExtendResult(
                coordination_id=data.coordination_id,
                previous_deadline=data.previous_deadline,
                deadline=data.deadline,
                total_minutes=data.total_minutes,
                extensions=data.extensions,
            )

        @activity.defn(name=READ_SPEND)
        async def read_spend(data: SpendInput) -> SpendReading:
            return SpendReading(spent=0.0, max_budget_override=5000.0, cheapest_cost=0.029)

        @activity.defn(name=DEACTIVATE)
        async def deactivate(data: DeactivateInput) -> Deactivation:
            await self.deactivate_gate.wait()
            return Deactivation(spent=0.0, ended_at=data.ended_at, end_reason=data.end_reason)

        return [activate, extend, read_spend, deactivate]


@asynccontextmanager
async def started(
    env: WorkflowEnvironment, store: FakeStore
) -> AsyncIterator[WorkflowHandle[EmergencyOverrideWorkflow, EmergencyStatus]]:
    """A worker with the fake activities and a freshly started emergency workflow."""
    await register_search_attributes(env.client)
    task_queue, workflow_id = fresh_ids()
    async with Worker(
        env.client,
        task_queue=task_queue,
        workflows=[EmergencyOverrideWorkflow],
        activities=store.all(),
    ):
        yield await env.client.start_workflow(
            EmergencyOverrideWorkflow.run, emergency_input(), id=workflow_id, task_queue=task_queue
        )


async def _phase(handle: WorkflowHandle[Any, Any], phase: EmergencyPhase) -> None:
    for _ in range(200):
        status = await handle.query(EmergencyOverrideWorkflow.status)
        if status.phase is phase:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"never reached {phase}")


async def _refused(call: Any, kind: str) -> ApplicationError:
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await call
    cause = refused.value.cause
    assert isinstance(cause, ApplicationError)
    assert cause.type == kind, cause.message
    return cause


async def test_updates_refused_while_ending(time_env: WorkflowEnvironment) -> None:
    store = FakeStore()
    store.deactivate_gate.clear()
    async with started(time_env, store) as handle:
        await handle.execute_update(EmergencyOverrideWorkflow.activation)
        cancel = await handle.start_update(
            EmergencyOverrideWorkflow.cancel,
            CancelRequest(reason="provider back"),
            wait_for_stage=WorkflowUpdateStage.ACCEPTED,
        )
        await _phase(handle, EmergencyPhase.ending)
        await _refused(
            handle.execute_update(
                EmergencyOverrideWorkflow.extend, ExtendRequest(minutes=5, reason="more")
            ),
            "EmergencyEnded",
        )
        await _refused(
            handle.execute_update(EmergencyOverrideWorkflow.cancel, CancelRequest(reason="again")),
            "EmergencyEnded",
        )
        store.deactivate_gate.set()
        status = await cancel.result()
        assert (status.phase, status.end_reason) == (EmergencyPhase.ended, EndReason.cancelled)
        assert (await handle.result()).end_reason is EndReason.cancelled
        await record_history(handle, "refused_while_ending")


async def test_extend_refused_before_activation(time_env: WorkflowEnvironment) -> None:
    store = FakeStore()
    store.activate_gate.clear()
    async with started(time_env, store) as handle:
        await _phase(handle, EmergencyPhase.activating)
        await _refused(
            handle.execute_update(
                EmergencyOverrideWorkflow.extend, ExtendRequest(minutes=5, reason="more")
            ),
            "EmergencyNotActive",
        )
        store.activate_gate.set()
        activation = await handle.execute_update(EmergencyOverrideWorkflow.activation)
        assert activation.selected_node.node_id == "stripe_premium_emergency"
        await handle.execute_update(EmergencyOverrideWorkflow.cancel, CancelRequest(reason="done"))
        await handle.result()


async def test_refused_activation_fails_the_update_and_the_workflow(
    time_env: WorkflowEnvironment,
) -> None:
    store = FakeStore()
    store.refuse_activation = ApplicationError(
        "no eligible node for service 'stripe'",
        {"excludedNodes": [{"nodeId": "stripe_premium_emergency", "reason": "breaker_open"}]},
        type="NoEligibleNode",
        non_retryable=True,
    )
    async with started(time_env, store) as handle:
        cause = await _refused(
            handle.execute_update(EmergencyOverrideWorkflow.activation), "NoEligibleNode"
        )
        assert cause.details[0]["excludedNodes"][0]["reason"] == "breaker_open"
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        status = await handle.query(EmergencyOverrideWorkflow.status)
        assert status.phase is EmergencyPhase.failed
        await record_history(handle, "activation_refused")
