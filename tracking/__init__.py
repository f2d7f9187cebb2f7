"""MLflow tracking of a run: one experiment per dataset/profile, one parent run per logical
run, one nested child run per image. A client of MLflow only (no Prefect): the tasks in
`tasks/tracking.py` wrap it, the flows decide when it is called.

    client.py       `Tracker` (the run structure over MlflowClient, the duplicate rule)
    logical_run.py  the logical run across killed and resumed runs: state file, parent
                    run, child run of an image, what reconcile logs
    guard.py        `TrackingGuard`, the circuit breaker for a server that is down
    meta.py         settings as params, git commit, DVC data version

MLflow outages never stop the night (docs/pipeline.md, "MLflow"): the flows call
these through retried tasks, trip the guard when a server stays down, list the images not
logged in summary.json `tracking_failed`, and the next run logs them (reconcile).
"""
from gani.redact import redact_uri

from .client import CHILD_KIND, HTTP_DEFAULTS, PARENT_KIND, ChildRun, Tracker, experiment_name
from .guard import TrackingGuard, guard_for
from .logical_run import STATE_FILE, TrackingRun
from .meta import dvc_data_version, flatten, git_commit

__all__ = ["CHILD_KIND", "HTTP_DEFAULTS", "PARENT_KIND", "STATE_FILE", "ChildRun", "Tracker",
           "TrackingGuard", "TrackingRun", "dvc_data_version", "experiment_name", "flatten",
           "git_commit", "guard_for", "redact_uri"]
