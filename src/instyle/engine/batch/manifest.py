"""The record of a batch job beside its outputs: nothing lost, nothing twice.

``manifest.csv`` has a row per image (input, output, status "ok" or "failed", error, seconds),
appended as results arrive (a kill loses at most the rows in flight; a torn last line is ignored)
and rewritten at the end, one row per image in the order of the inputs. ``manifest.json`` records
the job: a fingerprint of the model, its options and the output format.

A rerun of the same job (same fingerprint) skips every image whose output exists (outputs are
written atomically, so an existing file is a complete one) and runs the rest: those that failed
and those never finished. Another job in the same folder (other model or options) starts afresh
and replaces the outputs it names, as plain ``stylize`` does.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import os
import re
from pathlib import Path
from typing import Any, Iterable

from instyle.engine.fileio import write_atomic

__all__ = ["COLUMNS", "JOB_FILE", "MANIFEST_FILE", "Manifest", "remove_stray_temporaries"]

MANIFEST_FILE = "manifest.csv"
JOB_FILE = "manifest.json"
COLUMNS = ("input", "output", "status", "error", "seconds")
STATUSES = ("ok", "failed")


def _csv_text(rows: Iterable[dict[str, Any]], header: bool) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    if header:
        writer.writeheader()
    for row in rows:
        seconds = row.get("seconds")
        writer.writerow({**row, "seconds": "" if seconds in (None, "") else f"{float(seconds):.3f}"})
    return buffer.getvalue()


class Manifest:
    """The manifest of the job ``fingerprint`` in ``folder``; :meth:`previous` reads what an earlier
    run of the same job recorded, :meth:`start` writes the job record, :meth:`append` the rows."""

    def __init__(self, folder: Path, fingerprint: str, settings: dict[str, Any]) -> None:
        self.folder, self.fingerprint, self.settings = Path(folder), fingerprint, settings
        self.path, self.job_path = self.folder / MANIFEST_FILE, self.folder / JOB_FILE
        self._file = None

    def same_job(self) -> bool:
        """Whether the folder holds a record of this job (an earlier, maybe unfinished, run)."""
        try:
            return json.loads(self.job_path.read_text()).get("fingerprint") == self.fingerprint
        except (OSError, ValueError, AttributeError):
            return False

    def previous(self) -> dict[str, dict[str, str]]:
        """The last complete row of each input that an earlier run of this job recorded."""
        if not self.same_job():
            return {}
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError:
            return {}
        if text and not text.endswith("\n"):  # a torn last line: that row never counted
            text = text[: text.rfind("\n") + 1]
        rows = {}
        for row in csv.DictReader(io.StringIO(text)):
            if row.get("status") in STATUSES and row.get("input"):
                rows[row["input"]] = row
        return rows

    def start(self, continuing: bool) -> None:
        """Write the job record and open the manifest: continued (``continuing``: rows appended to
        an earlier run's) or new (its header only)."""
        record = {
            "fingerprint": self.fingerprint, **self.settings,
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }  # fmt: skip
        if not continuing or not self.path.exists():
            write_atomic(self.path, _csv_text([], header=True))
        write_atomic(self.job_path, json.dumps(record, indent=1, default=str) + "\n")
        self._file = open(self.path, "a+", encoding="utf-8", newline="")
        self._file.seek(0, os.SEEK_END)
        if self._file.tell():  # after a torn last line, the next row starts on its own line
            self._file.seek(self._file.tell() - 1)
            last = self._file.read(1)
            if last != "\n":
                self._file.write("\n")

    def append(self, rows: list[dict[str, Any]]) -> None:
        """Record ``rows``, on disk before this returns."""
        if rows and self._file is not None:
            self._file.write(_csv_text(rows, header=False))
            self._file.flush()
            os.fsync(self._file.fileno())

    def finish(self, order: list[str]) -> dict[str, dict[str, str]]:
        """Close the manifest and rewrite it atomically: one row per input (its last), in ``order``
        (the job's inputs; rows of others after them). Returns those rows by input."""
        if self._file is not None:
            self._file.close()
            self._file = None
        rows = self.previous()
        ordered = [rows[i] for i in order if i in rows]
        known = set(order)
        ordered += [row for key, row in rows.items() if key not in known]
        write_atomic(self.path, _csv_text(ordered, header=True))
        return rows


def remove_stray_temporaries(outputs: Iterable[str]) -> int:
    """Remove the temporary files a killed writer left beside ``outputs``
    (:func:`instyle.engine.fileio.write_atomic` names them ``.NAME.XXXXXXXX.tmp``): they never
    count as outputs. Returns how many were removed."""
    by_folder: dict[str, set[str]] = {}
    for output in outputs:
        folder, name = os.path.split(output)
        by_folder.setdefault(folder, set()).add(name)
    removed = 0
    pattern = re.compile(r"\.(.+)\.[0-9a-f]{8}\.tmp")
    for folder, names in by_folder.items():
        try:
            entries = os.listdir(folder or ".")
        except OSError:
            continue
        for entry in entries:
            match = pattern.fullmatch(entry)
            if match and match.group(1) in names:
                try:
                    os.unlink(os.path.join(folder, entry))
                    removed += 1
                except OSError:
                    pass
    return removed
