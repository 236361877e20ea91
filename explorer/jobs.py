"""Work that takes seconds (a re-clustering, a drill-down), run in a thread so that the page
stays usable, with its stage and time for the page to poll."""

from __future__ import annotations

import threading
import time
import uuid

from ice.errors import IceError

KEPT = 32  # finished jobs remembered for a late poll


class Jobs:
    """The jobs of one explorer process. start(fn, label) runs fn(report) in a thread;
    status(job_id) says where it is. fn calls report("stage") as each stage starts."""

    def __init__(self):
        self._jobs: dict[str, dict] = {}
        self._lock = threading.Lock()

    def start(self, fn, label: str) -> str:
        job_id = uuid.uuid4().hex[:12]
        job = {
            "label": label,
            "stage": "starting",
            "started": time.monotonic(),
            "done": False,
            "error": None,
            "result": None,
        }
        with self._lock:
            self._jobs[job_id] = job
            for old in [k for k, j in self._jobs.items() if j["done"]][:-KEPT]:
                del self._jobs[old]

        def report(stage: str) -> None:
            job["stage"] = stage

        def run() -> None:
            try:
                job["result"] = fn(report)
            except IceError as e:
                job["error"] = str(e)
            except Exception as e:  # shown on the page: the job's thread has no one else to tell
                job["error"] = f"{label} failed: {type(e).__name__}: {e}"
            job["seconds"] = time.monotonic() - job["started"]
            job["done"] = True

        threading.Thread(target=run, name=f"ice-job-{job_id}", daemon=True).start()
        return job_id

    def status(self, job_id: str) -> dict | None:
        """{label, stage, seconds, done, error, result}, or None for a job this process did not
        start (served by several processes, another one runs it)."""
        job = self._jobs.get(job_id)
        if job is None:
            return None
        seconds = job.get("seconds", time.monotonic() - job["started"])
        return {**{k: v for k, v in job.items() if k != "started"}, "seconds": seconds}
