"""The fake backend: 'starts' each batch by writing a line into $FAKE_BACKEND_LOG."""

from __future__ import annotations

import json
import os

from kiln_fake_backend import FakeOptions
from qec_kiln.backends import Backend, JobState, LaunchRequest, Submission


class FakeBackend(Backend):
    name = "fake"
    options_type = FakeOptions
    startup_seconds = 5.0

    def _opts(self, request: LaunchRequest) -> FakeOptions:
        opts = self.options(request.options)
        assert isinstance(opts, FakeOptions)
        return opts

    def describe(self, request: LaunchRequest) -> str:
        opts = self._opts(request)
        return f"fake: {len(request.batch_ids)} batch(es) in zone {opts.zone} image {opts.image}"

    def launch(self, request: LaunchRequest) -> Submission:
        opts = self._opts(request)
        with open(os.environ["FAKE_BACKEND_LOG"], "a", encoding="utf-8") as f:
            f.write(json.dumps({"zone": opts.zone, "image": opts.image,
                                "batches": list(request.batch_ids)}) + "\n")
        return Submission(job_ids={b: f"{opts.zone}-{b}" for b in request.batch_ids},
                          commands=[["fake", "--zone", opts.zone]],
                          message=f"started in fake zone {opts.zone}")

    def job_states(self, bucket_url: str, sweep: str) -> dict[str, JobState]:
        return {}

    def cancel(self, bucket_url: str, sweep: str) -> list[str]:
        return []
