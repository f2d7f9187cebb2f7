"""Small pieces of tasks/ and tracking/: fault classification, GPU limit names, MLflow
helpers."""
import socket

import pytest

from tasks.pipeline import gpu_limit_name
from tasks.retry import is_transient
from tracking import dvc_data_version, flatten, redact_uri


@pytest.mark.parametrize("exc, transient", [
    (ConnectionError("reset"), True), (TimeoutError(), True), (OSError("EIO"), True),
    (FileNotFoundError("gone"), False), (PermissionError(), False), (ValueError("bug"), False),
    (KeyError("x"), False), (RuntimeError("out of memory"), False)])
def test_transient_faults_are_told_apart(exc, transient):
    assert is_transient(exc) is transient


def test_botocore_and_mlflow_faults_are_transient():
    from botocore.exceptions import EndpointConnectionError
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    assert is_transient(EndpointConnectionError(endpoint_url="http://127.0.0.1:1"))
    assert is_transient(MlflowException("API request failed: Max retries exceeded"))
    assert not is_transient(MlflowException("Invalid parameter",
                                                error_code=INVALID_PARAMETER_VALUE))


def test_gpu_limit_name_per_host(tiny_settings, shrink):
    assert gpu_limit_name(tiny_settings) == tiny_settings.orchestration.gpu_limit
    per_host = shrink(tiny_settings, **{"orchestration.gpu_limit": "gpu:{host}"})
    assert gpu_limit_name(per_host) == f"gpu:{socket.gethostname()}"


def test_params_flattened_and_uris_redacted(tiny_settings, tmp_path):
    flat = flatten(tiny_settings.model_dump(mode="json"))
    assert flat["tune.steps"] == "2" and flat["tune.loss.rec"] == "l2"
    assert flat["edit.factors"] == "[-2.0, 2.0]"
    assert redact_uri("https://user:s3cret@mlflow.example/api?token=abc") == \
        "https://mlflow.example/api"
    assert redact_uri("s3://bucket/prefix") == "s3://bucket/prefix"
    (tmp_path / "data.dvc").write_text("outs:\n- md5: abc.dir\n  path: data\n")
    assert dvc_data_version(tmp_path / "data.dvc") == "abc.dir"
    assert dvc_data_version(tmp_path / "missing.dvc") == "none"


def test_retries_are_set_once_per_run_from_orchestration(tiny_settings, shrink):
    """The decorators declare no retries; `Tasks.for_run` gives every task the run's."""
    from dataclasses import fields

    from tasks.pipeline import Tasks, align_task
    from tasks.retry import retry_transient

    s = shrink(tiny_settings, **{"orchestration.retries": 3,
                                 "orchestration.retry_delay_seconds": 2})
    tasks = Tasks.for_run(s)
    for f in fields(tasks):
        t = getattr(tasks, f.name)
        assert t.retries == 3 and t.retry_delay_seconds == [2.0, 4.0, 8.0], f.name
        assert t.retry_condition_fn is retry_transient, f.name
    assert align_task.retries == 0


def test_settings_travel_as_the_model(tiny_settings):
    """A flow given Settings uses that object (no dict round trip); overrides make a new one."""
    from flows.invert import settings_for

    assert settings_for(tiny_settings, None, None, "params.yaml") is tiny_settings
    changed = settings_for(tiny_settings, None, ["tune.steps=5"], "params.yaml")
    assert changed.tune.steps == 5 and tiny_settings.tune.steps == 2
