"""Logging set-up shared by every subcommand: readable lines on stderr, and a log file when asked."""

from __future__ import annotations

import logging
import re
import sys
from datetime import datetime
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
FILE_DATES = "%Y-%m-%d %H:%M:%S"  # log files carry the date, so that a run's span can be read back from them


def setup(log_file: str | Path | None = None, verbose: bool = False, level: int | None = None) -> None:
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(level or (logging.DEBUG if verbose else logging.INFO))
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter(FORMAT, "%H:%M:%S"))
    root.addHandler(console)
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_file, mode="w")
        handler.setFormatter(logging.Formatter(FORMAT, FILE_DATES))
        root.addHandler(handler)
    for noisy in ("matplotlib", "PIL", "fontTools", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


DONE = re.compile(r"lvdr (\S+) done in ([\d.]+) s(?: \(([\d.]+) s CPU\))?")


def job_times(logs: Path, cpu: bool = False) -> list[tuple]:
    """(job, seconds) from the 'lvdr <stage> done in N s (M s CPU)' line every pipeline job's log ends
    with, or with ``cpu`` (job, seconds, CPU seconds or None in older logs); a job is its log's path
    under ``logs`` (rule/dataset...)."""
    times = []
    for log in sorted(Path(logs).rglob("*.log")):
        found = DONE.findall(log.read_text(errors="replace"))
        if found:
            job, (_, seconds, cpu_seconds) = str(log.relative_to(logs).with_suffix("")), found[-1]
            times.append((job, float(seconds), float(cpu_seconds) if cpu_seconds else None) if cpu else (job, float(seconds)))
    return times


STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) ", re.M)


def wall_seconds(logs: Path) -> float | None:
    """Seconds from the first job's first log line to the last job's last one: a finished run's wall time
    (about a second short: the first job's start-up comes before its first line). None without dated logs."""
    stamps = [found for log in Path(logs).rglob("*.log") if (found := STAMP.findall(log.read_text(errors="replace")))]
    if not stamps:
        return None
    first, last = min(s[0] for s in stamps), max(s[-1] for s in stamps)  # the format sorts as text
    return (datetime.strptime(last, FILE_DATES) - datetime.strptime(first, FILE_DATES)).total_seconds()
