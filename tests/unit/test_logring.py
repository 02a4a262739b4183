"""The ring of a replica's recent log lines (runtime/logring.py): bounded in lines and characters, numbered."""

from __future__ import annotations

import logging

from edgeflow.runtime.logring import LINE_CHARS, LOG_LINES, LogRing


def _logger(name: str) -> tuple[logging.Logger, LogRing]:
    logger = logging.getLogger(f"edgeflow.test.ring.{name}")
    logger.setLevel(logging.DEBUG)
    ring = LogRing()
    logger.addHandler(ring)
    return logger, ring


def test_the_ring_keeps_the_last_lines_numbered() -> None:
    """Only the last LOG_LINES survive; sequence numbers count every line, so a reader sees what went past."""
    logger, ring = _logger("last")
    try:
        for i in range(LOG_LINES + 5):
            logger.info("line %d", i)
        logger.debug("not kept: below INFO")
        lines = ring.snapshot()
        assert len(lines) == LOG_LINES
        assert [x["seq"] for x in lines] == list(range(6, LOG_LINES + 6))
        assert lines[-1]["msg"] == f"line {LOG_LINES + 4}" and lines[-1]["level"] == "INFO"
        assert isinstance(lines[0]["ts"], float)
    finally:
        logger.removeHandler(ring)


def test_a_line_is_bounded_and_a_traceback_is_one_line() -> None:
    """A long message is cut at LINE_CHARS; a traceback keeps its first line and says how many followed."""
    logger, ring = _logger("bounded")
    try:
        logger.error("x" * 1000)
        # As the runner's ErrorLog writes a failure: its message, then the traceback, in one record.
        logger.error(
            "%s\n%s", "node 'n': process() raised", "Traceback (most recent call last):\n  ...\nValueError: boom"
        )
        long, tb = ring.snapshot()
        assert len(long["msg"]) == LINE_CHARS and long["msg"].endswith("...")
        assert tb["msg"] == "node 'n': process() raised (+3 lines: traceback)" and tb["level"] == "ERROR"
    finally:
        logger.removeHandler(ring)
