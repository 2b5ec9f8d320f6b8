"""Flows: a parent job that runs once, after its children finished, with their results.

```python
flow = jobs.flow(("report", request), children=[("fetch", a), ("fetch", b)], on_child_failure="fail")
flow.parent_id, flow.child_ids


@jobs.job("report")
def report(request: ReportRequest, job: Job) -> Report:
    results = job.child_results()  # {child_id: result}
```

See docs/flows.md: the guarantees, nesting (:func:`subflow`), the timeout, status and costs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cloudjobs.lazy import lazy_names

# The names load from cloudjobs.flows.definition on first access: CloudJobs imports only the
# rule of jobs.flow()'s default (cloudjobs.flows.rules), and a consumer never builds a flow.
if TYPE_CHECKING:
    from cloudjobs.flows.definition import (
        DEFAULT_FLOW_TIMEOUT,
        MAX_FLOW_CHILDREN,
        Flow,
        OnChildFailure,
        SubFlow,
        subflow,
    )

__all__ = ["DEFAULT_FLOW_TIMEOUT", "MAX_FLOW_CHILDREN", "Flow", "OnChildFailure", "SubFlow", "subflow"]

__getattr__, __dir__ = lazy_names(__name__, {}, __all__, default="cloudjobs.flows.definition")
