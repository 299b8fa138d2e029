"""The campaign's event log: one JSON object a line (`{"unix_ms", "event", ...}`), written by
every thread of the runner as things happen and kept with the report: the seed reproduces the
schedule, this log is what actually happened."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path


class EventLog:
    def __init__(self, path: Path):
        self.path = path
        self.lock = threading.Lock()
        self.file = path.open("x")

    def write(self, event: str, **fields) -> dict:
        record = {"unix_ms": int(time.time() * 1000), "event": event, **fields}
        with self.lock:
            self.file.write(json.dumps(record, sort_keys=True) + "\n")
            self.file.flush()
        return record

    def close(self) -> None:
        with self.lock:
            self.file.close()

    def read(self) -> list[dict]:
        with self.lock:
            self.file.flush()
        return [json.loads(line) for line in self.path.read_text().splitlines() if line]
