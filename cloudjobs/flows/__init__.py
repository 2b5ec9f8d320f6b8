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

from cloudjobs.flows.definition import (
    DEFAULT_FLOW_TIMEOUT,
    MAX_FLOW_CHILDREN,
    Flow,
    OnChildFailure,
    SubFlow,
    subflow,
)

__all__ = ["DEFAULT_FLOW_TIMEOUT", "MAX_FLOW_CHILDREN", "Flow", "OnChildFailure", "SubFlow", "subflow"]
