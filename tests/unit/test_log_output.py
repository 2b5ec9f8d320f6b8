"""GatheringStreamHandler: sparse lines are written at once, a burst in one write, warnings at once."""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Callable, Iterator

import pytest

from cloudjobs.logs import GatheringStreamHandler
from tests.unit.at_once import results_at_once


class _Stream(io.StringIO):
    """Records every write call; signals each one."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []
        self.wrote = threading.Event()

    def write(self, text: str) -> int:
        self.writes.append(text)
        self.wrote.set()
        return super().write(text)


@pytest.fixture
def stream() -> _Stream:
    return _Stream()


@pytest.fixture
def logger(stream: _Stream) -> Iterator[logging.Logger]:
    handler = GatheringStreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger(f"tests.gathering.{id(stream)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield logger
    logger.removeHandler(handler)
    handler.close()


def test_a_lone_line_is_written_at_once(logger: logging.Logger, stream: _Stream) -> None:
    logger.info("started")

    assert stream.writes == ["INFO started\n"]


def test_a_burst_of_lines_goes_out_in_one_later_write_in_order(
    logger: logging.Logger, stream: _Stream
) -> None:
    logger.info("first")
    stream.wrote.clear()
    for number in range(100):
        logger.info("job %d completed", number)
    assert stream.writes == ["INFO first\n"]  # the burst is held back...

    assert stream.wrote.wait(5)  # ...and written by the flusher, without a flush call
    assert len(stream.writes) == 2
    assert stream.writes[1] == "".join(f"INFO job {number} completed\n" for number in range(100))


def test_a_warning_is_written_at_once_after_the_lines_gathered_before_it(
    logger: logging.Logger, stream: _Stream
) -> None:
    logger.info("first")
    logger.info("gathered")
    logger.warning("failed")

    assert stream.getvalue() == "INFO first\nINFO gathered\nWARNING failed\n"


def test_flush_writes_what_is_gathered(logger: logging.Logger, stream: _Stream) -> None:
    logger.info("first")
    logger.info("second")
    for handler in logger.handlers:
        handler.flush()

    assert stream.getvalue() == "INFO first\nINFO second\n"


def test_closing_the_handler_writes_what_is_gathered(logger: logging.Logger, stream: _Stream) -> None:
    logger.info("first")
    logger.info("second")
    for handler in list(logger.handlers):
        handler.close()

    assert stream.getvalue() == "INFO first\nINFO second\n"


def test_a_closed_stream_loses_the_lines_without_raising(logger: logging.Logger, stream: _Stream) -> None:
    logger.info("first")
    stream.close()

    logger.warning("nowhere to go")  # no exception out of the logging call


class _ReentrantStream(io.StringIO):
    """As a buffered stderr: a write entered while one is under way on the same thread (a signal
    handler's, run inside a write that a slow reader blocks) raises "reentrant call"."""

    def __init__(self) -> None:
        super().__init__()
        self.inside_write: Callable[[], None] | None = None
        self._busy = False

    def write(self, text: str) -> int:
        if self._busy:
            raise RuntimeError("reentrant call inside <_io.BufferedWriter name='<stderr>'>")
        self._busy = True
        try:
            if (interrupt := self.inside_write) is not None:
                self.inside_write = None
                interrupt()
            return super().write(text)
        finally:
            self._busy = False


def test_a_line_logged_inside_the_handlers_own_write_goes_out_with_the_next_one() -> None:
    stream = _ReentrantStream()
    handler = GatheringStreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger(f"tests.gathering.reentrant.{id(stream)}")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        stream.inside_write = lambda: logger.warning("inner")
        logger.warning("outer")  # no exception out of either logging call...
        assert stream.getvalue() == "WARNING outer\n"
        logger.warning("next")  # ...and the inner line is not lost
        assert stream.getvalue() == "WARNING outer\nWARNING inner\nWARNING next\n"
    finally:
        logger.removeHandler(handler)
        handler.close()


def test_lines_logged_by_eight_threads_at_once_are_all_written_whole_each_thread_in_its_order(
    logger: logging.Logger, stream: _Stream
) -> None:
    def log_lines() -> list[str]:
        name = f"thread-{threading.get_ident()}"
        for number in range(500):
            logger.info("%s line %d", name, number)
            if number % 100 == 99:
                logger.warning("%s warning %d", name, number)  # a write while others gather
        return [name]

    names = results_at_once(8, log_lines)
    for handler in logger.handlers:
        handler.flush()

    lines = stream.getvalue().splitlines()
    assert len(lines) == 8 * 505
    for name in names:
        own = [line for line in lines if line.split(" ")[1] == name]
        assert own == [
            line
            for number in range(500)
            for line in (
                [f"INFO {name} line {number}"]
                + ([f"WARNING {name} warning {number}"] if number % 100 == 99 else [])
            )
        ]
