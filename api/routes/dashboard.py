"""The operator dashboard: a static page served by the API, and the series behind its charts.

The page (api/static/) needs no build step: plain HTML, CSS and JavaScript that call the same
endpoints as any client, with the token the operator types in. The page and its assets hold
no data, so they need no token; everything they show comes from endpoints that do.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response

from api.deps import Reader, SessionDep
from api.paths import PREFIX
from api.schemas.analytics import Timeframe, Timestamp
from api.schemas.common import Envelope, ErrorEnvelope, ResponseModel
from routing.outcome import MONEY_DECIMALS, PERCENT_DECIMALS
from store.analytics import coordination_series
from store.base import utcnow

STATIC = Path(__file__).resolve().parent.parent / "static"
ASSETS = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
# The page talks to its own origin only; Temporal UI links are plain navigation.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

router = APIRouter(tags=["analytics"])  # under the API prefix
ERRORS = {code: {"model": ErrorEnvelope} for code in (401, 403, 422)}
pages = APIRouter()  # at the root


class SeriesPoint(ResponseModel):
    """One time bucket of coordinations."""

    start: Timestamp
    coordinations: int
    success_rate: float | None  # percent; None when the bucket has no coordinations
    cost: float  # estimated cost of the bucket's decisions
    cost_savings: float


class CoordinationSeries(ResponseModel):
    """Coordinations over the timeframe in equal buckets, oldest first."""

    timeframe: Timeframe
    bucket_seconds: float
    points: list[SeriesPoint]


async def dashboard_page(request: Request) -> Response:
    """The dashboard page, pointed at this API's prefix."""
    html = (STATIC / "dashboard.html").read_text(encoding="utf-8").replace("__API_BASE__", PREFIX)
    return HTMLResponse(html, headers=PAGE_HEADERS)


async def dashboard_asset(request: Request) -> Response:
    """One of the page's own scripts or style sheets."""
    name = request.path_params["name"]
    if name not in ASSETS:
        return Response(status_code=404)
    return FileResponse(STATIC / name, media_type=ASSETS[name], headers=PAGE_HEADERS)


# Plain routes, not API operations: no token, not in the OpenAPI document.
pages.add_route("/dashboard", dashboard_page, methods=["GET"], include_in_schema=False)
pages.add_route("/dashboard/{name}", dashboard_asset, methods=["GET"], include_in_schema=False)


@router.get(
    "/coordination-analytics/series",
    response_model=Envelope[CoordinationSeries],
    response_model_by_alias=True,
    responses=ERRORS,  # type: ignore[arg-type]
)
def get_coordination_series(
    session: SessionDep,
    _: Reader,
    timeframe: Annotated[Timeframe, Query(description="How far back to look.")] = Timeframe.hour,
    buckets: Annotated[int, Query(ge=2, le=200, description="Number of equal buckets.")] = 30,
) -> Envelope[CoordinationSeries]:
    """Coordinations, success rate, cost and savings over time, for the dashboard's charts."""
    start, seconds, rows = coordination_series(
        session, now=utcnow(), window=timeframe.window, buckets=buckets
    )
    found: dict[int, tuple[int, int, int, float, float]] = {}
    for index, count, successful, cost, savings in rows:
        # A row committed at `now` exactly lands one past the end: it belongs to the last.
        key = min(max(index, 0), buckets - 1)
        before = found.get(key, (key, 0, 0, 0.0, 0.0))
        found[key] = (
            key,
            before[1] + count,
            before[2] + successful,
            before[3] + cost,
            before[4] + savings,
        )
    points = []
    for index in range(buckets):
        _index, count, successful, cost, savings = found.get(index, (index, 0, 0, 0.0, 0.0))
        points.append(
            SeriesPoint(
                start=start + timedelta(seconds=index * seconds),
                coordinations=count,
                success_rate=round(successful / count * 100.0, PERCENT_DECIMALS) if count else None,
                cost=round(cost, MONEY_DECIMALS),
                cost_savings=round(savings, MONEY_DECIMALS),
            )
        )
    return Envelope(
        data=CoordinationSeries(timeframe=timeframe, bucket_seconds=seconds, points=points)
    )
