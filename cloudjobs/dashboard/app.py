"""The dashboard's ASGI application (Starlette, server-rendered Jinja2 templates, no script)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote, urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from cloudjobs.dashboard import chart, csrf
from cloudjobs.dashboard.auth import DashboardAuth
from cloudjobs.dashboard.pages import DEFAULT_SAMPLE, dead_letters, overview
from cloudjobs.dashboard.samples import DEFAULT_INTERVAL, DepthSamples
from cloudjobs.errors import CloudjobsError

if TYPE_CHECKING:
    from cloudjobs.app import CloudJobs

_SECURITY_HEADERS: Final = {
    # No script runs on these pages, none may be injected; nothing is framed.
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


_CHILD_LINKS: Final = 100
"""A flow parent's page links this many of its children (a flow holds up to 1,000)."""


def create_app(
    jobs: CloudJobs,
    *,
    auth: DashboardAuth,
    read_only: bool = False,
    trace_url: str | None = None,
    sample_interval: timedelta = DEFAULT_INTERVAL,
    dlq_sample: int = DEFAULT_SAMPLE,
) -> Starlette:
    """The dashboard of ``jobs`` as an ASGI app, to serve or mount in a service.

    Args:
        jobs: the app whose queues, dead letters, jobs and schedules it shows.
        auth: who may use it: :class:`~cloudjobs.dashboard.auth.TokenAuth`,
            :class:`~cloudjobs.dashboard.auth.NoAuth` (something in front authenticates), or a
            callable of the request. Required: mounted, the choice is the mounter's.
        read_only: show no actions (redrive, purge, cancel); their POSTs are refused.
        trace_url: a trace viewer's URL with ``{trace_id}`` where the job's trace id goes (e.g.
            ``https://grafana.example.com/explore?traceId={trace_id}``); None shows the id alone.
        sample_interval: how often the overview's chart samples the queues' depths.
        dlq_sample: dead letters read for the grouped counts (a bounded scan).
    """
    if not callable(auth):
        raise TypeError("auth must be TokenAuth(...), NoAuth(...) or a callable of the request")
    if trace_url is not None and "{trace_id}" not in trace_url:
        raise CloudjobsError("trace_url must contain {trace_id}")
    environment = Environment(
        loader=PackageLoader("cloudjobs.dashboard", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
    )
    environment.filters["when"] = _when
    # The chart's coordinates are computed for this box (cloudjobs.dashboard.chart).
    environment.globals.update(chart_width=chart.WIDTH, chart_height=chart.HEIGHT, bar_width=chart.BAR_WIDTH)
    samples = DepthSamples(jobs, interval=sample_interval)

    def render(request: Request, template: str, status_code: int = 200, **context: Any) -> Response:
        token = csrf.token_of(request)
        html = environment.get_template(template).render(
            csrf_field=csrf.FIELD,
            csrf_token=token,
            read_only=read_only,
            has_schedules=bool(jobs.schedules),
            queue_names=jobs.queue_names,
            **context,
        )
        response = HTMLResponse(html, status_code=status_code)
        response.set_cookie(csrf.COOKIE, token, httponly=True, samesite="strict", path="/")
        return response

    async def guarded_form(request: Request) -> dict[str, Any] | Response:
        if read_only:
            return Response("read-only dashboard", status_code=403)
        form = await request.form()
        if not csrf.is_valid(request, form.get(csrf.FIELD)):
            return Response("missing or wrong CSRF token", status_code=403)
        return {
            "queue": str(form.get("queue") or "default"),
            "ids": [str(i) for i in form.getlist("id")],
            "form": form,
        }

    def home(request: Request) -> Response:
        rows = overview(jobs, samples)
        return render(request, "overview.html", rows=rows, interval=samples.interval.total_seconds())

    def dead_letter_page(request: Request) -> Response:
        query = request.query_params
        queue = query.get("queue") or jobs.queue_names[0]
        if queue not in jobs.queue_names:
            return render(request, "error.html", 404, message=f"no queue named {queue!r}")
        page_number = max(1, _integer(query.get("page"), 1))
        try:
            view = dead_letters(
                jobs,
                queue,
                reason=query.get("reason") or None,
                job_type=query.get("type") or None,
                page_number=page_number,
                sample_size=dlq_sample,
            )
        except CloudjobsError as exc:
            return render(request, "error.html", 502, message=str(exc))
        return render(
            request,
            "dead_letters.html",
            view=view,
            redriven=query.get("redriven"),
            purged=query.get("purged"),
            page_query=lambda number: urlencode({"queue": queue, **view.filters, "page": number}),
        )

    async def redrive(request: Request) -> Response:
        checked = await guarded_form(request)
        if isinstance(checked, Response):
            return checked
        queue, ids = checked["queue"], checked["ids"]
        if not ids:
            return _back(queue, redriven=0)
        report = await run_in_threadpool(jobs.dlq.redrive, job_ids=ids, queue=queue)
        return _back(queue, redriven=report.moved)

    async def purge(request: Request) -> Response:
        checked = await guarded_form(request)
        if isinstance(checked, Response):
            return checked
        queue, ids = checked["queue"], checked["ids"]
        if checked["form"].get("confirm") != "yes":
            # Ask first, stating the count; nothing is deleted by this request.
            return render(request, "confirm_purge.html", queue=queue, ids=ids)
        purged = await run_in_threadpool(jobs.dlq.purge, job_ids=ids, queue=queue) if ids else 0
        return _back(queue, purged=purged)

    def job_page(request: Request) -> Response:
        job_id = (request.query_params.get("id") or "").strip()
        status = None
        error = None
        if job_id:
            try:
                status = jobs.status(job_id)
            except CloudjobsError as exc:
                error = str(exc)
        link = None
        if status is not None and status.trace_id and trace_url:
            link = trace_url.replace("{trace_id}", quote(status.trace_id, safe=""))
        return render(
            request,
            "job.html",
            job_id=job_id,
            status=status,
            error=error,
            trace_link=link,
            cancelled=request.query_params.get("cancelled"),
            child_links=_CHILD_LINKS,
        )

    async def cancel(request: Request) -> Response:
        checked = await guarded_form(request)
        if isinstance(checked, Response):
            return checked
        job_id = str(checked["form"].get("job_id") or "")
        outcome = (await run_in_threadpool(jobs.cancel, job_id)).outcome
        return RedirectResponse(
            f"/jobs?{urlencode({'id': job_id, 'cancelled': outcome.value})}", status_code=303
        )

    def schedule_page(request: Request) -> Response:
        from cloudjobs.scheduling.listing import schedule_rows

        return render(request, "schedules.html", rows=schedule_rows(jobs, count=3))

    def stylesheet(request: Request) -> Response:
        css = resources.files("cloudjobs.dashboard").joinpath("style.css").read_text(encoding="utf-8")
        return Response(css, media_type="text/css", headers={"Cache-Control": "max-age=300"})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        samples.start()
        try:
            yield
        finally:
            samples.stop()

    async def authenticate(request: Request, call_next: RequestResponseEndpoint) -> Response:
        if not auth(request):
            return Response(
                "authentication required",
                status_code=401,
                headers={"WWW-Authenticate": 'Basic realm="cloudjobs dashboard", charset="UTF-8"'},
            )
        response = await call_next(request)
        for name, value in _SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    application = Starlette(
        routes=[
            Route("/", home),
            Route("/dead-letters", dead_letter_page),
            Route("/dead-letters/redrive", redrive, methods=["POST"]),
            Route("/dead-letters/purge", purge, methods=["POST"]),
            Route("/jobs", job_page),
            Route("/jobs/cancel", cancel, methods=["POST"]),
            Route("/schedules", schedule_page),
            Route("/style.css", stylesheet),
        ],
        middleware=[Middleware(BaseHTTPMiddleware, dispatch=authenticate)],
        lifespan=lifespan,
    )
    application.state.samples = samples
    return application


def _back(queue: str, **counts: int) -> Response:
    query = urlencode({"queue": queue, **{name: str(value) for name, value in counts.items()}})
    return RedirectResponse(f"/dead-letters?{query}", status_code=303)


def _when(moment: datetime | None) -> str:
    """A time as operators read it: UTC, to the second."""
    if moment is None:
        return "–"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _integer(text: str | None, default: int) -> int:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default
