"""A run's structured metrics: ``save_dir/save_name/metrics.jsonl``, one JSON object per line.

The file format only; :class:`rsmatch_usb.metrics.MetricsHook` writes it
during training and ``benchmark_configs.report`` reads it. Each record is
an object with

* ``kind``: ``log`` (a log step), ``eval`` (a step that evaluated), ``event``
  or ``result`` (the run's final result);
* ``it``: completed iterations (the number USB's log lines show);
* ``time``: seconds since the epoch when the record was written;

and the values, keyed as in the log (``train/sup_loss``, ``eval/top-1-acc``,
``eval/detector_auroc/<source>``, ...; a value that is not finite is null).
An ``event`` record has ``event``: ``run_start`` (each start or resume of
the run, carrying the run's arguments in ``args``) or an event a log
otherwise states in prose (``detector_trusted``).

Records are appended and flushed one at a time, so a killed run keeps what
it wrote and a resumed run appends; readers let a later record win for its
iteration. Like :mod:`data_tools.run_folder` it imports nothing of the
project, so the report reads metrics without loading semilearn.
"""
from __future__ import annotations

import json
import math
import os
import time
from typing import IO, Any, Dict, List, Mapping, Optional

FILE_NAME = "metrics.jsonl"
# The keys every record has besides its values.
RECORD_KEYS = ("kind", "it", "time", "event", "args")


def path_in(folder: str) -> str:
    """The metrics file of the run folder ``folder``."""
    return os.path.join(folder, FILE_NAME)


def plain(value: Any) -> Any:
    """``value`` as JSON holds it: a number as a float or int (null when not finite), text, a list of those."""
    if isinstance(value, (bool, str)) or value is None:
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    number = float(value)  # a float, a numpy scalar or a 0-d tensor, as USB's log line formats them
    return number if math.isfinite(number) else None


def plain_values(values: Mapping[str, Any]) -> Dict[str, Any]:
    """The entries of ``values`` that :func:`plain` can hold, converted; others (objects, arrays) are left out."""
    out = {}
    for key, value in values.items():
        try:
            out[str(key)] = plain(value)
        except (TypeError, ValueError):
            continue
    return out


def read_records(path: str) -> List[Dict[str, Any]]:
    """The records of a metrics file, in file order.

    A line that is not a whole JSON object is skipped: the last line of a run
    killed while writing it (a value cut from 0.9 to 0. would otherwise read
    as a value).
    """
    records = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.endswith("\n"):
                break
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
    return records


class MetricsWriter:
    """Appends records to a metrics file, each flushed as it is written.

    Opening cuts a last line that a killed run left unfinished, so the
    records a resumed run appends start on a line of their own.
    """

    def __init__(self, path: str):
        self.path = path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        if os.path.exists(path):
            with open(path, "r+b") as f:
                data = f.read()
                if data and not data.endswith(b"\n"):
                    f.truncate(data.rfind(b"\n") + 1)
        self.file: Optional[IO[str]] = open(path, "a", encoding="utf-8")

    def write(self, kind: str, it: int, values: Optional[Mapping[str, Any]] = None, **fields: Any) -> Dict[str, Any]:
        """Append one record (``kind``, ``it``, the time, ``fields``, then ``values``); returns it."""
        record = {"kind": kind, "it": int(it), "time": round(time.time(), 3), **fields, **plain_values(values or {})}
        self.file.write(json.dumps(record, allow_nan=False) + "\n")
        self.file.flush()
        return record

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
