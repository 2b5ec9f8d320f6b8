"""Recurring schedules (``jobs.schedule(...)``) and the self-hosted scheduler that fires them.

- :mod:`~cloudjobs.scheduling.definition`: :class:`Schedule`, :class:`Overlap`, :class:`CatchUp`.
- :mod:`~cloudjobs.scheduling.ticks`: fire times (cron in a time zone, or intervals), DST rules.
- :mod:`~cloudjobs.scheduling.state`: the :class:`ScheduleStore` protocol and its records.
- :mod:`~cloudjobs.scheduling.plan`: what a scheduler does next, decided from a record.
- :mod:`~cloudjobs.scheduling.scheduler`: :class:`Scheduler`, one fire per tick across processes.
- :mod:`~cloudjobs.scheduling.memory`, :mod:`~cloudjobs.scheduling.dynamodb`: the stores.

Nothing is imported here, so ``import cloudjobs`` stays lean; croniter is imported when a cron
schedule is first declared. See docs/scheduling.md.
"""
