"""The live catalog over HTTP and the command line: changes route at once, conflicts are 409s,
every change is a revision, audited and announced, and the export round-trips."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from api.app import create_app
from api.auth import Role
from store.base import utcnow
from store.catalog import CatalogSpec
from store.db import transaction
from store.models import (
    AuditEntry,
    BudgetSpend,
    CatalogRevision,
    Event,
    NodeHealthRow,
    ProviderNodeRow,
    RoutingOverrideRow,
)
from switchyard import settings as settings_module
from switchyard.cli import app as cli
from switchyard.settings import Settings

BASE = "/api/v1/enhanced-traffic-coordination"
Auth = Callable[..., dict[str, str]]
PRIMARY, SECONDARY = "stripe_primary_us_east", "stripe_secondary_us_west"


def decide(client: TestClient, headers: dict[str, str], **context: Any) -> Any:
    body = {"serviceName": "stripe", "operation": "payment_processing", "routingContext": context}
    return client.post(f"{BASE}/execute-coordination", json=body, headers=headers)


def catalog(client: TestClient, auth: Auth) -> dict[str, Any]:
    response = client.get(f"{BASE}/catalog", headers=auth(Role.viewer))
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


@pytest.fixture
def cli_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Any]]:
    """Run `switchyard ...` against the test store."""
    monkeypatch.setenv("SWITCHYARD_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("SWITCHYARD_HOME", str(settings.home))
    monkeypatch.setenv("SWITCHYARD_JWT_SECRET", settings.jwt_secret)
    settings_module.get_settings.cache_clear()
    runner = CliRunner()
    yield lambda *args: runner.invoke(cli, list(args))
    settings_module.get_settings.cache_clear()


def test_a_price_applied_from_a_file_changes_the_next_decision(
    api_client: TestClient, auth: Auth, cli_env: Callable[..., Any], tmp_path: Path
) -> None:
    operator = auth(Role.operator)
    limit = {"budgetConstraints": {"costPerRequestLimit": 0.035}}
    assert (
        decide(api_client, operator, **limit).json()["data"]["routingDecision"]["selectedNode"][
            "nodeId"
        ]
        == PRIMARY
    )

    exported = tmp_path / "catalog.yaml"
    assert cli_env("catalog", "export", "-o", str(exported)).exit_code == 0
    unchanged = cli_env("catalog", "diff", str(exported))
    assert unchanged.exit_code == 0, unchanged.output  # export -> diff is empty
    assert "matches the live catalog" in unchanged.output
    assert cli_env("catalog", "apply", str(exported), "--yes").exit_code == 0
    assert "nothing to apply" in cli_env("catalog", "apply", str(exported), "--yes").output

    document = yaml.safe_load(exported.read_text())
    document["services"]["stripe"]["nodes"][0]["costPerRequest"] = 0.04
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(document, sort_keys=False))
    diff = cli_env("catalog", "diff", str(changed))
    assert diff.exit_code == 1
    assert f"~ node {PRIMARY} (stripe): costPerRequest 0.029 -> 0.04" in diff.output
    applied = cli_env("catalog", "apply", str(changed), "--yes", "--summary", "price rise")
    assert applied.exit_code == 0, applied.output

    api_client.app.state.runtime.snapshot.refresh()  # type: ignore[attr-defined]
    response = decide(api_client, operator, **limit)
    assert response.status_code == 200, response.text
    answer = response.json()["data"]["routingDecision"]
    assert answer["selectedNode"]["nodeId"] == SECONDARY  # the primary is above the limit now
    excluded = {e["nodeId"]: e["reason"] for e in answer["excludedNodes"]}
    assert excluded[PRIMARY] == "cost_above_limit"
    view = catalog(api_client, auth)
    assert (view["revision"], view["summary"]) == (2, "price rise")


def test_a_yaml_error_names_the_line(cli_env: Callable[..., Any], tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("services:\n  stripe:\n    nodes: [\n      {id: a\n")
    result = cli_env("catalog", "diff", str(broken))
    assert result.exit_code == 2
    assert "not valid YAML at line" in result.output


def test_a_new_service_routes_and_every_change_is_audited_and_announced(
    api_client: TestClient, auth: Auth, sessions: sessionmaker[Session]
) -> None:
    admin = auth(Role.admin)
    view = catalog(api_client, auth)
    document = view["catalog"]
    document["services"]["shipping"] = {
        "description": "Shipping labels",
        "budget": {"period": "daily", "limit": 100},
        "nodes": [
            {
                "id": "easypost_primary",
                "name": "EasyPost",
                "region": "us-east-1",
                "successRate": 99.0,
                "costPerRequest": 0.05,
                "latencyMs": 300,
                "healthScore": 90,
                "tags": ["labels"],
            }
        ],
    }
    put = api_client.put(
        f"{BASE}/catalog",
        json=document,
        headers={**admin, "If-Match": f'"{view["revision"]}"'},
    )
    assert put.status_code == 200, put.text
    assert put.json()["data"]["changes"] == [
        "+ service shipping",
        "+ node easypost_primary (shipping)",
    ]

    body = {"serviceName": "shipping", "operation": "create_label"}
    routed = api_client.post(f"{BASE}/execute-coordination", json=body, headers=auth(Role.operator))
    assert routed.status_code == 200, routed.text
    assert routed.json()["data"]["routingDecision"]["selectedNode"]["nodeId"] == "easypost_primary"

    with sessions() as session:
        events = session.scalars(select(Event).where(Event.event_type == "catalog_changed")).all()
        entries = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "PUT /catalog")
        ).all()
    assert [e.payload["revision"] for e in events] == [2]
    assert events[0].payload["changes"][0] == "+ service shipping"
    assert [(e.outcome, e.principal) for e in entries] == [("200", "test-user")]


def test_a_stale_revision_is_a_409_and_a_missing_one_a_428(
    api_client: TestClient, auth: Auth
) -> None:
    admin = auth(Role.admin)
    view = catalog(api_client, auth)
    patch = api_client.patch(f"{BASE}/providers/{SECONDARY}", json={"weight": 2}, headers=admin)
    assert patch.status_code == 200, patch.text
    assert patch.json()["data"]["changes"] == [f"~ node {SECONDARY} (stripe): weight 1.0 -> 2.0"]

    stale = api_client.put(
        f"{BASE}/catalog",
        json=view["catalog"],
        headers={**admin, "If-Match": str(view["revision"])},
    )
    assert stale.status_code == 409
    assert stale.json()["error"]["code"] == "catalog_revision_conflict"
    assert stale.json()["error"]["details"] == {"expected": 1, "current": 2}
    missing = api_client.put(f"{BASE}/catalog", json=view["catalog"], headers=admin)
    assert missing.status_code == 428


def test_a_disabled_node_is_never_chosen(api_client: TestClient, auth: Auth) -> None:
    admin, operator = auth(Role.admin), auth(Role.operator)
    assert (
        api_client.patch(
            f"{BASE}/providers/{PRIMARY}", json={"enabled": False}, headers=admin
        ).status_code
        == 200
    )
    chosen = {
        decide(api_client, operator, preferredStrategy=strategy).json()["data"]["routingDecision"][
            "selectedNode"
        ]["nodeId"]
        for strategy in (
            "HEALTH_BASED",
            "COST_OPTIMIZED",
            "LATENCY_OPTIMIZED",
            "HYBRID_OPTIMIZATION",
        )
    }
    assert PRIMARY not in chosen


def test_deleting_a_held_or_last_node_is_a_409_that_says_which(
    api_client: TestClient, auth: Auth, sessions: sessionmaker[Session]
) -> None:
    admin = auth(Role.admin)
    with transaction(sessions) as session:
        session.add(
            RoutingOverrideRow(
                workflow_id="recovery:stripe:s1",
                service="stripe",
                excluded_nodes=[PRIMARY],
                strategy="HEALTH_BASED",
                created_at=utcnow(),
                updated_at=utcnow(),
            )
        )
    held = api_client.delete(f"{BASE}/providers/{PRIMARY}", headers=admin)
    assert held.status_code == 409, held.text
    assert "recovery:stripe:s1" in held.json()["error"]["message"]

    retired = api_client.delete(f"{BASE}/providers/{SECONDARY}", headers=admin)
    assert retired.status_code == 200, retired.text
    with sessions() as session:
        row = session.get(ProviderNodeRow, SECONDARY)
        assert row is not None and not row.enabled  # disabled, history kept
    # The twilio service's last regular node... go through its nodes until one is left.
    assert (
        api_client.delete(f"{BASE}/providers/twilio_secondary_us_west", headers=admin).status_code
        == 200
    )
    assert (
        api_client.delete(f"{BASE}/providers/twilio_emergency_sip", headers=admin).status_code
        == 200
    )
    last = api_client.delete(f"{BASE}/providers/twilio_primary_us_east", headers=admin)
    assert last.status_code == 409
    assert "twilio would have no enabled node left" in last.json()["error"]["message"]
    assert api_client.delete(f"{BASE}/providers/nope", headers=admin).status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"serviceName": "nope", "node": {}}, "node.id"),
        ({"serviceName": "stripe", "node": {"costPerRequest": -1}}, "node.costPerRequest"),
        ({"serviceName": "stripe", "node": {"region": "US East!"}}, "node.region"),
    ],
)
def test_a_bad_new_node_is_a_422_naming_the_field(
    api_client: TestClient, auth: Auth, body: dict[str, Any], field: str
) -> None:
    node = {
        "id": "stripe_new",
        "name": "New",
        "region": "us-east-1",
        "successRate": 99,
        "costPerRequest": 0.03,
        "latencyMs": 100,
        "healthScore": 90,
    }
    if field == "node.id":
        node.pop("id")
    body = {**body, "node": node | body["node"]}
    response = api_client.post(f"{BASE}/providers", json=body, headers=auth(Role.admin))
    assert response.status_code == 422, response.text
    assert field in [d["field"] for d in response.json()["error"]["details"]]


def test_an_unknown_service_or_a_taken_id_is_a_422(api_client: TestClient, auth: Auth) -> None:
    node = {
        "id": PRIMARY,
        "name": "Dup",
        "region": "us-east-1",
        "successRate": 99,
        "costPerRequest": 0.03,
        "latencyMs": 100,
        "healthScore": 90,
    }
    taken = api_client.post(
        f"{BASE}/providers", json={"serviceName": "stripe", "node": node}, headers=auth(Role.admin)
    )
    assert taken.status_code == 422
    assert taken.json()["error"]["details"][0]["field"] == "node.id"
    unknown = api_client.post(
        f"{BASE}/providers",
        json={"serviceName": "nope", "node": node | {"id": "fresh"}},
        headers=auth(Role.admin),
    )
    assert unknown.status_code == 422
    assert unknown.json()["error"]["details"][0]["field"] == "serviceName"


def test_request_constraints_are_hard_and_checked(api_client: TestClient, auth: Auth) -> None:
    operator, admin = auth(Role.operator), auth(Role.admin)
    tagged = {"tags": ["pci", "tokenized"]}
    assert api_client.patch(f"{BASE}/providers/{SECONDARY}", json=tagged, headers=admin).is_success
    pci = decide(api_client, operator, constraints={"requiredTags": ["tokenized"]})
    assert pci.json()["data"]["routingDecision"]["selectedNode"]["nodeId"] == SECONDARY
    eu = decide(api_client, operator, constraints={"allowedRegions": ["eu-west-1"]})
    assert eu.status_code == 503
    error = eu.json()["error"]
    assert error["details"]["constraint"] == "routingContext.constraints.allowedRegions"
    assert "allowedRegions" in error["message"]

    unknown_tag = decide(api_client, operator, constraints={"requiredTags": ["voicee"]})
    assert unknown_tag.status_code == 422
    assert unknown_tag.json()["error"]["details"][0]["field"] == (
        "routingContext.constraints.requiredTags.0"
    )
    bad_region = decide(api_client, operator, constraints={"allowedRegions": ["EU West"]})
    assert bad_region.status_code == 422
    assert "allowedRegions" in bad_region.json()["error"]["details"][0]["field"]
    unknown_node = decide(api_client, operator, constraints={"excludedNodes": ["nope"]})
    assert unknown_node.status_code == 422
    assert unknown_node.json()["error"]["details"][0]["field"] == (
        "routingContext.constraints.excludedNodes.0"
    )


def test_the_shipped_catalog_keeps_refunds_on_the_primary(
    api_client: TestClient, auth: Auth, sessions: sessionmaker[Session]
) -> None:
    operator = auth(Role.operator)
    body = {"serviceName": "stripe", "operation": "refund"}
    refund = api_client.post(f"{BASE}/execute-coordination", json=body, headers=operator)
    decision = refund.json()["data"]["routingDecision"]
    assert decision["selectedNode"]["nodeId"] == PRIMARY
    assert {e["nodeId"]: e["reason"] for e in decision["excludedNodes"]} == {
        SECONDARY: "node_excluded",
        "stripe_premium_emergency": "node_excluded",
    }
    # With the primary's breaker held open a refund is refused, never sent elsewhere.
    command = {"state": "OPEN", "reason": "maintenance"}
    headers = auth(Role.incident_commander)
    api_client.post(f"{BASE}/providers/{PRIMARY}/breaker", json=command, headers=headers)
    refused = api_client.post(f"{BASE}/execute-coordination", json=body, headers=operator)
    assert refused.status_code == 503
    payment = decide(api_client, operator)
    assert payment.json()["data"]["routingDecision"]["selectedNode"]["nodeId"] == SECONDARY


def test_two_replicas_both_route_with_a_change(
    clean_store: Engine, settings: Settings, auth: Auth
) -> None:
    # Two API processes on one store: the one that did not take the change reloads on the
    # store's NOTIFY (PostgreSQL) or its poll (SQLite) and routes with it.
    with (
        TestClient(create_app(settings, prepare=False)) as first,
        TestClient(create_app(settings, prepare=False)) as second,
    ):
        patch = first.patch(
            f"{BASE}/providers/{PRIMARY}", json={"enabled": False}, headers=auth(Role.admin)
        )
        assert patch.status_code == 200
        snapshot = second.app.state.runtime.snapshot  # type: ignore[attr-defined]
        deadline = time.monotonic() + 10
        while snapshot.current.catalog_revision < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert snapshot.current.catalog_revision == 2
        node = snapshot.current.node(PRIMARY)
        assert node is not None and not node.enabled


def test_the_catalog_read_and_the_revisions_agree(
    api_client: TestClient, auth: Auth, sessions: sessionmaker[Session]
) -> None:
    view = catalog(api_client, auth)
    with sessions() as session:
        revision = session.get(CatalogRevision, view["revision"])
        assert revision is not None
    # The revision holds the whole catalog as applied: the same catalog the API reads back.
    assert CatalogSpec.model_validate(revision.content) == CatalogSpec.model_validate(
        view["catalog"]
    )


def test_a_change_leaves_the_live_state_of_other_nodes_alone(
    api_client: TestClient, auth: Auth, sessions: sessionmaker[Session]
) -> None:
    headers = auth(Role.incident_commander)
    command = {"state": "OPEN", "reason": "maintenance"}
    api_client.post(f"{BASE}/providers/{SECONDARY}/breaker", json=command, headers=headers)
    assert decide(api_client, auth(Role.operator)).status_code == 200  # spends budget
    with sessions() as session:
        before = session.get(NodeHealthRow, SECONDARY)
        spent = session.scalar(select(BudgetSpend.spent))
        assert before is not None
        state = (before.breaker_state, before.breaker_forced, before.updated_at)
    price = api_client.patch(
        f"{BASE}/providers/{PRIMARY}", json={"costPerRequest": 0.03}, headers=auth(Role.admin)
    )
    assert price.status_code == 200
    with sessions() as session:
        after = session.get(NodeHealthRow, SECONDARY)
        assert after is not None
        assert (after.breaker_state, after.breaker_forced, after.updated_at) == state
        assert session.scalar(select(BudgetSpend.spent)) == spent


@pytest.mark.parametrize(
    ("consumers", "field", "says"),
    [
        (
            {"a": {"uses": ["b"]}, "b": {"uses": ["a"]}},
            "consumers",
            "cycle: a -> b -> a",
        ),
        ({"route_optimization": {"uses": ["samsara", "paypal"]}}, "consumers", "paypal"),
        ({"stripe": {"uses": ["maps"]}}, "consumers", "a service of the catalog has that name"),
    ],
)
def test_a_consumer_graph_with_a_cycle_or_a_stranger_is_a_422(
    api_client: TestClient, auth: Auth, consumers: dict[str, Any], field: str, says: str
) -> None:
    view = catalog(api_client, auth)
    body = {**view["catalog"], "consumers": consumers}
    headers = {**auth(Role.admin), "If-Match": str(view["revision"])}
    response = api_client.put(f"{BASE}/catalog", json=body, headers=headers)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert says in response.text
    assert any(d["field"].startswith(field) for d in error["details"]), error
    assert catalog(api_client, auth)["revision"] == view["revision"]  # nothing applied


@pytest.mark.parametrize(
    ("plan", "field", "says"),
    [
        ({"strategy": "FASTEST", "action": "failover_to_backup"}, "strategy", "HEALTH_BASED"),
        ({"strategy": "HEALTH_BASED", "action": "pray"}, "action", "retry_with_backoff"),
        (
            {"strategy": "HEALTH_BASED", "action": "failover_to_backup", "restoreStages": [0.5]},
            "restoreStages",
            "1.0",
        ),
        (
            {"strategy": "HEALTH_BASED", "action": "failover_to_backup", "maxRetries": -1},
            "maxRetries",
            "greater than or equal",
        ),
    ],
)
def test_a_bad_recovery_plan_is_a_422_naming_the_field(
    api_client: TestClient, auth: Auth, plan: dict[str, Any], field: str, says: str
) -> None:
    view = catalog(api_client, auth)
    body = view["catalog"]
    body["services"]["samsara"]["recoveryPlans"]["broken"] = plan
    headers = {**auth(Role.admin), "If-Match": str(view["revision"])}
    response = api_client.put(f"{BASE}/catalog", json=body, headers=headers)
    assert response.status_code == 422, response.text
    assert says in response.text
    details = response.json()["error"]["details"]
    assert any("recoveryPlans" in d["field"] and field in d["field"] for d in details), details
    assert catalog(api_client, auth)["revision"] == view["revision"]  # nothing applied


def test_recovery_plans_are_catalog_entries(api_client: TestClient, auth: Auth) -> None:
    view = catalog(api_client, auth)
    plans = view["catalog"]["services"]["samsara"]["recoveryPlans"]
    assert plans["samsara_failover_strategy"]["action"] == "enable_multi_provider_redundancy"
    body = view["catalog"]
    body["services"]["samsara"]["recoveryPlans"]["cheap"] = {
        "strategy": "COST_OPTIMIZED",
        "action": "cost_optimized_failover",
    }
    headers = {**auth(Role.admin), "If-Match": str(view["revision"])}
    response = api_client.put(f"{BASE}/catalog", json=body, headers=headers)
    assert response.status_code == 200, response.text
    assert any("recoveryPlans" in line for line in response.json()["data"]["changes"])
    after = catalog(api_client, auth)["catalog"]["services"]["samsara"]["recoveryPlans"]
    assert (after["cheap"]["strategy"], after["cheap"]["action"]) == (
        "COST_OPTIMIZED",
        "cost_optimized_failover",
    )
    assert after["cheap"]["maxRetries"] is None  # the default budget


def test_idempotent_operations_are_catalog_data_that_hedges_follow(
    api_client: TestClient,
    auth: Auth,
    cli_env: Callable[..., Any],
    tmp_path: Path,
    sessions: sessionmaker[Session],
) -> None:
    # A recovery's redundancy plan holds samsara: primary out, samsara_secondary_eu standby.
    with transaction(sessions) as session:
        session.add(
            RoutingOverrideRow(
                workflow_id="recovery:samsara:s1",
                service="samsara",
                excluded_nodes=["samsara_primary"],
                strategy="AVAILABILITY_FOCUSED",
                standby_node="samsara_secondary_eu",
            )
        )
    api_client.app.state.runtime.snapshot.refresh()  # type: ignore[attr-defined]

    def gps() -> dict[str, Any]:
        body = {"serviceName": "samsara", "operation": "gps_tracking"}
        response = api_client.post(
            f"{BASE}/execute-coordination", json=body, headers=auth(Role.operator)
        )
        assert response.status_code == 200, response.text
        decision: dict[str, Any] = response.json()["data"]["routingDecision"]
        return decision

    hedged = gps()
    assert hedged["hedge"]["nodeId"] == "samsara_secondary_eu"
    assert hedged["estimatedCost"] == 0.061

    exported = tmp_path / "catalog.yaml"
    assert cli_env("catalog", "export", "-o", str(exported)).exit_code == 0
    document = yaml.safe_load(exported.read_text())
    assert document["services"]["samsara"]["idempotentOperations"] == ["gps_tracking"]
    del document["services"]["samsara"]["idempotentOperations"]
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(document, sort_keys=False))
    diff = cli_env("catalog", "diff", str(changed))
    assert "~ service samsara: idempotentOperations" in diff.output, diff.output
    assert cli_env("catalog", "apply", str(changed), "--yes").exit_code == 0
    api_client.app.state.runtime.snapshot.refresh()  # type: ignore[attr-defined]

    once = gps()
    assert once["selectedNode"]["nodeId"] == "samsara_backup"
    assert once["hedge"] is None and once["estimatedCost"] == 0.055
