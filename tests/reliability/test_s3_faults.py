"""Remote-store faults, through the real Prefect flow (`flows.invert.run_invert`) with s3://
input and output on moto.

Two ways of breaking S3:

- `S3Faults`: chosen S3 API calls (operation + key) fail the first n times, or always. It
  patches aiobotocore's `AioBaseClient._make_api_call`, i.e. below s3fs (whose own retry
  loop and error translation run as in production: it retries timeouts and SlowDown itself,
  turns AccessDenied into PermissionError and 5xx into OSError) and above botocore's retry
  handler (so the injected error is what aiobotocore raises once botocore gave up, and no
  random botocore backoff makes the test slow or flaky).
- A real outage: a moto server of the test's own on a fixed port is stopped while the run
  is tuning and started again on the same port a few seconds later. ThreadedMotoServer
  keeps its buckets in moto's in-process backends, so the restarted server serves the same
  objects (as a real S3 endpoint would after a network blip). botocore's own retries are
  set to one attempt (AWS_MAX_ATTEMPTS=1) so that Prefect's task retries are what bridges
  the outage (with the default, botocore alone retries a refused connection ~5 times over
  several seconds, at random intervals).

Retry delays are kept short with orchestration.retry_delay_seconds; MLflow is off.
"""
from __future__ import annotations

import io as _io
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Optional

import pytest

from gani import io
from gani.stages.demo_data import demo_images
from tests.servers import free_port

DONE_FILES = ("aligned.png", "e4e_latent.pt", "e4e.png", "latent.pt", "tuned.safetensors",
              "recon.png", "tune.json", "loss.png", "edits.png", "compare.png", "metrics.json",
              "e4e_metrics.json", "status.json")


# --------------------------------------------------------------------------- injection

def endpoint_down(api_params: dict):
    from botocore.exceptions import EndpointConnectionError

    return EndpointConnectionError(endpoint_url=f"http://s3.test/{api_params.get('Key', '')}")


def read_timeout(api_params: dict):
    from botocore.exceptions import ReadTimeoutError

    return ReadTimeoutError(endpoint_url=f"http://s3.test/{api_params.get('Key', '')}")


def client_error(code: str, status: int) -> Callable[[dict], Exception]:
    def make(api_params: dict, operation: str = "S3"):
        from botocore.exceptions import ClientError

        return ClientError({"Error": {"Code": code, "Message": f"{code} (injected)"},
                            "ResponseMetadata": {"HTTPStatusCode": status}}, operation)
    return make


@dataclass
class Fault:
    operation: str                      # GetObject, PutObject, HeadObject, ...
    key_suffix: str                     # matched against the end of the object key
    error: Callable[[dict], Exception]
    times: Optional[int] = None         # None: always
    calls: int = 0                      # matching calls seen
    injected: int = 0                   # of them failed


@dataclass
class S3Faults:
    faults: list[Fault] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    active: bool = True

    def add(self, operation: str, key_suffix: str, error, times: Optional[int] = None) -> Fault:
        f = Fault(operation, key_suffix, error, times)
        self.faults.append(f)
        return f

    def install(self, monkeypatch) -> "S3Faults":
        from aiobotocore.client import AioBaseClient

        real = AioBaseClient._make_api_call
        faults = self

        async def _make_api_call(client, operation_name, api_params):
            err = faults.check(operation_name, api_params)
            if err is not None:
                raise err
            return await real(client, operation_name, api_params)

        monkeypatch.setattr(AioBaseClient, "_make_api_call", _make_api_call)
        return self

    def check(self, operation: str, api_params: dict) -> Optional[Exception]:
        key = str(api_params.get("Key", ""))
        with self.lock:
            if not self.active:
                return None
            for f in self.faults:
                if f.operation == operation and key.endswith(f.key_suffix):
                    f.calls += 1
                    if f.times is None or f.injected < f.times:
                        f.injected += 1
                        err = f.error(api_params)
                        if hasattr(err, "operation_name"):
                            err.operation_name = operation
                        return err
        return None

    @property
    def injected(self) -> int:
        return sum(f.injected for f in self.faults)


# --------------------------------------------------------------------------- helpers

def put_dataset(prefix: str, names) -> None:
    files = demo_images()
    for name in names:
        io.write_bytes(f"{prefix}/{name}", files[name])


def settings_for(shrink, tiny_settings, **extra):
    return shrink(tiny_settings, **{"tracking.enabled": "false",
                                    "orchestration.retries": 3,
                                    "orchestration.retry_delay_seconds": 0.3, **extra})


def unreadable_artifacts(out: str, image_id: str) -> list[str]:
    """A done image's files on the store that are missing or do not parse."""
    import torch
    from PIL import Image
    from safetensors.torch import load as load_safetensors

    from gani.stages.common import load_tensor

    bad = []
    for name in DONE_FILES:
        try:
            data = io.read_bytes(f"{out}/{image_id}/{name}")
            if name.endswith(".png"):
                Image.open(_io.BytesIO(data)).verify()
            elif name.endswith(".pt"):
                assert torch.isfinite(load_tensor(data)).all()
            elif name.endswith(".json"):
                json.loads(data)
            else:
                load_safetensors(data)
        except Exception:  # noqa: BLE001 - anything unreadable is lost data
            bad.append(name)
    return bad


def data_lost(out: str, good_ids) -> int:
    lost = 0
    for image_id in good_ids:
        status = io.read_json(f"{out}/{image_id}/status.json") or {}
        lost += 1 if status.get("state") != "done" else len(unreadable_artifacts(out, image_id))
    return lost


def count_calls(monkeypatch, module, name: str, log: list) -> None:
    """Record (image ids, time) of every call of `module.name` (a stage the tasks call)."""
    real = getattr(module, name)

    def wrapper(first, *a, **k):
        items = first if isinstance(first, list) else [first]
        log.append(([i.image_id for i in items], time.perf_counter()))
        return real(first, *a, **k)

    monkeypatch.setattr(module, name, wrapper)


def attempts(log: list, image_id: str) -> list[float]:
    return [t for ids, t in log if image_id in ids]


# --------------------------------------------------------------------------- tests

@pytest.mark.parametrize("make, transient, reason", [
    (endpoint_down, True, "storage_error"),
    (read_timeout, True, "storage_error"),
    (client_error("InternalError", 500), True, "storage_error"),
    (client_error("SlowDown", 503), True, "storage_error"),
    (client_error("ServiceUnavailable", 503), True, "storage_error"),
    (client_error("AccessDenied", 403), False, "storage_error"),
    (client_error("NoSuchKey", 404), False, "storage_error"),
    (client_error("InvalidArgument", 400), False, "storage_error"),
    (client_error("KeyTooLongError", 400), False, "storage_error"),
])
def test_s3_errors_as_the_tasks_see_them_are_classified(make, transient, reason):
    """What reaches a task after s3fs (its `translate_boto_error`, as `_error_wrapper` does):
    5xx / throttling / connection faults are retried, 4xx answers are not; either way an
    image failing on them gets reason storage_error."""
    from s3fs.errors import translate_boto_error

    from tasks.retry import failure_reason, is_transient

    exc = translate_boto_error(make({"Key": "photos/a.png"}))
    assert is_transient(exc) is transient, (type(exc), exc)
    assert failure_reason("align", exc) == reason


def test_configuration_and_memory_faults_are_not_retried():
    import torch
    from botocore.exceptions import NoCredentialsError, ParamValidationError

    from gani.tuning import TuningOOM
    from tasks.retry import failure_reason, is_transient

    assert not is_transient(NoCredentialsError())
    assert not is_transient(ParamValidationError(report="Bucket must not be empty"))
    assert failure_reason("encode", NoCredentialsError()) == "encode_error"
    for exc in (torch.cuda.OutOfMemoryError("CUDA out of memory"), TuningOOM(1)):
        assert not is_transient(exc)
        assert failure_reason("tune", exc) == "out_of_memory"
    assert failure_reason("evaluate", ValueError("a bug")) == "evaluate_error"


@pytest.mark.slow
@pytest.mark.service
def test_transient_s3_faults_are_retried_and_the_run_completes(
        prefect_api, s3_bucket, shrink, tiny_settings, monkeypatch, reliability):
    """Input reads refused twice, an output write answered 500 once, a write answered
    SlowDown twice, a read timing out once: every image is done, nothing is lost, and the
    faults that reached the tasks were retried by Prefect with growing delays."""
    import tasks.pipeline as tp
    from flows.invert import run_invert

    src, out = f"s3://{s3_bucket}/photos", f"s3://{s3_bucket}/inversions"
    names = ["astronaut.png", "astronaut_mirrored.jpg"]
    put_dataset(src, names)
    faults = S3Faults()
    read_in = faults.add("GetObject", "photos/astronaut.png", endpoint_down, times=2)
    write_500 = faults.add("PutObject", "astronaut_mirrored/e4e_latent.pt",
                           client_error("InternalError", 500), times=1)
    slow_down = faults.add("PutObject", "astronaut/recon.png", client_error("SlowDown", 503),
                           times=2)
    timeout = faults.add("GetObject", "astronaut_mirrored/tune.json", read_timeout, times=1)
    faults.install(monkeypatch)
    align_log: list = []
    encode_log: list = []
    count_calls(monkeypatch, tp, "align_image", align_log)
    count_calls(monkeypatch, tp, "encode_image", encode_log)
    settings = settings_for(shrink, tiny_settings)
    delay = settings.orchestration.retry_delay_seconds

    summary = run_invert(src, out, settings, dataset_name="s3-transient")
    faults.active = False

    assert summary["counts"] == {"done": 2, "quarantined": 0, "failed": 0}
    assert [f.injected for f in faults.faults] == [2, 1, 2, 1]
    # refused connections and the 500 reached the tasks: Prefect ran them again ...
    tries = attempts(align_log, "astronaut")
    assert len(tries) == 3
    gaps = [b - a for a, b in zip(tries, tries[1:])]
    # ... after delays of retry_delay_seconds * 2**k (Prefect's jitter keeps each >= 0.63x)
    assert gaps[0] >= 0.6 * delay and gaps[1] >= 1.2 * delay, gaps
    assert len(attempts(encode_log, "astronaut_mirrored")) == 2
    # s3fs retried SlowDown and the read timeout itself (no task retry needed for them)
    assert slow_down.calls == 3 and timeout.calls == 2
    assert write_500.calls == 2 and read_in.calls == 3
    stored = io.read_json(f"{out}/summary.json")
    assert stored["counts"] == summary["counts"]
    lost = data_lost(out, ["astronaut", "astronaut_mirrored"])
    assert lost == 0
    reliability.from_summary(
        "remote: S3", "input reads refused 2x, write 500 1x, SlowDown 2x, read timeout 1x",
        summary, faults_injected=faults.injected, faults_survived=faults.injected,
        data_lost=lost, note="Prefect retried align 2x / encode 1x with backoff; s3fs "
                             "absorbed SlowDown and the timeout")


@pytest.mark.slow
@pytest.mark.service
def test_permanent_s3_faults_fail_those_images_only(
        prefect_api, s3_bucket, shrink, tiny_settings, monkeypatch, reliability):
    """One input object can never be read (connection refused every time) and one image's
    reconstruction can never be written (AccessDenied): those two images are failed with
    reason storage_error and the error as detail, after the retries (refused) or at once
    (denied: not transient); the third image is done; the run finishes and reports."""
    import tasks.pipeline as tp
    from flows.invert import run_invert

    src, out = f"s3://{s3_bucket}/photos", f"s3://{s3_bucket}/inversions"
    put_dataset(src, ["astronaut.png", "astronaut_mirrored.jpg", "astronaut_tilted.png"])
    faults = S3Faults()
    unreadable = faults.add("GetObject", "photos/astronaut_mirrored.jpg", endpoint_down)
    denied = faults.add("PutObject", "astronaut_tilted/recon.png",
                        client_error("AccessDenied", 403))
    faults.install(monkeypatch)
    align_log: list = []
    tune_log: list = []
    count_calls(monkeypatch, tp, "align_image", align_log)
    count_calls(monkeypatch, tp, "tune_batch", tune_log)
    settings = settings_for(shrink, tiny_settings, **{"tune.batch_size": 2})

    summary = run_invert(src, out, settings, dataset_name="s3-permanent")
    faults.active = False

    assert summary["counts"] == {"done": 1, "quarantined": 0, "failed": 2}
    assert summary["failed"] == {"astronaut_mirrored": "storage_error",
                                 "astronaut_tilted": "storage_error"}
    s_read = io.read_json(f"{out}/astronaut_mirrored/status.json")
    s_write = io.read_json(f"{out}/astronaut_tilted/status.json")
    assert s_read["state"] == "failed" and "EndpointConnectionError" in s_read["detail"]
    assert s_write["state"] == "failed" and "PermissionError" in s_write["detail"]
    assert summary["details"]["astronaut_tilted"] == s_write["detail"]
    # refused: tried 1 + retries times; denied: not retried by Prefect (only the flow's
    # one-by-one retry of a failed batch tried it again)
    assert len(attempts(align_log, "astronaut_mirrored")) == 1 + settings.orchestration.retries
    assert unreadable.calls == 1 + settings.orchestration.retries
    assert denied.calls == len(attempts(tune_log, "astronaut_tilted")) == 2
    stored = io.read_json(f"{out}/summary.json")
    assert stored["failed"] == summary["failed"]
    lost = data_lost(out, ["astronaut"])
    assert lost == 0
    reliability.from_summary(
        "remote: S3", "one input never readable + one output write denied", summary,
        faults_injected=unreadable.injected + denied.injected,
        faults_survived=unreadable.injected + denied.injected, data_lost=lost,
        note="both images failed storage_error with detail; the other image done; run "
             "finished")


# --------------------------------------------------------------------------- real outage

class Outage:
    """A moto server on a fixed port that can go away for a while and come back."""

    def __init__(self, port: int):
        self.port = port
        self.server = None
        self.down_at = self.up_at = None
        self.thread: Optional[threading.Thread] = None

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def begin(self, seconds: float) -> None:
        """Stop the server now; start it again on the same port after `seconds`."""
        self.stop()
        self.down_at = time.perf_counter()

        def back():
            time.sleep(seconds)
            self.start()
            self.up_at = time.perf_counter()

        self.thread = threading.Thread(target=back, daemon=True)
        self.thread.start()


@pytest.mark.slow
@pytest.mark.service
def test_s3_outage_mid_run_is_bridged_by_retries(
        prefect_api, shrink, tiny_settings, monkeypatch, reliability):
    """The S3 endpoint (input and output buckets) stops answering when the first tuning
    batch starts and comes back on the same port 3 s later: the tasks that hit the outage
    are retried with backoff and the run completes with every image done."""
    import boto3
    import s3fs
    from aiobotocore.client import AioBaseClient
    from botocore.exceptions import ConnectionError as BotoConnectionError

    import tasks.pipeline as tp
    from flows.invert import run_invert

    outage = Outage(free_port())
    url = f"http://127.0.0.1:{outage.port}"
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL_S3": url,
                 "AWS_MAX_ATTEMPTS": "1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    s3fs.S3FileSystem.clear_instance_cache()
    outage.start()
    try:
        tag = uuid.uuid4().hex[:8]
        client = boto3.client("s3", endpoint_url=url)
        for b in (f"in-{tag}", f"out-{tag}"):
            client.create_bucket(Bucket=b)
        src, out = f"s3://in-{tag}/photos", f"s3://out-{tag}/inversions"
        put_dataset(src, ["astronaut.png", "astronaut_mirrored.jpg"])

        refused = {"n": 0}
        real_call = AioBaseClient._make_api_call

        async def counting(client_, operation_name, api_params):
            try:
                return await real_call(client_, operation_name, api_params)
            except BotoConnectionError:
                refused["n"] += 1
                raise

        monkeypatch.setattr(AioBaseClient, "_make_api_call", counting)
        tune_log: list = []
        real_tune = tp.tune_batch

        def tune_batch(items, *a, **k):
            tune_log.append(([i.image_id for i in items], time.perf_counter()))
            if outage.down_at is None:
                outage.begin(3.0)
            return real_tune(items, *a, **k)

        monkeypatch.setattr(tp, "tune_batch", tune_batch)
        settings = settings_for(shrink, tiny_settings, **{"orchestration.retries": 4,
                                                          "orchestration.retry_delay_seconds": 1.0})
        summary = run_invert(src, out, settings, dataset_name="s3-outage")

        assert outage.up_at is not None and outage.up_at - outage.down_at >= 3.0
        assert refused["n"] >= 1                 # requests really failed during the outage
        assert len(tune_log) >= 2                # the tuning task was run again ...
        assert tune_log[-1][1] >= outage.up_at   # ... and got through after the restart
        assert summary["counts"] == {"done": 2, "quarantined": 0, "failed": 0}
        assert io.read_json(f"{out}/summary.json")["counts"] == summary["counts"]
        lost = data_lost(out, ["astronaut", "astronaut_mirrored"])
        assert lost == 0
        reliability.from_summary(
            "remote: S3", "real outage: moto server down 3 s while tuning, same port back",
            summary, faults_injected=1, faults_survived=1, data_lost=lost,
            note=f"{refused['n']} S3 requests refused; tune task run {len(tune_log)}x; "
                 f"botocore AWS_MAX_ATTEMPTS=1")
    finally:
        if outage.thread is not None:
            outage.thread.join(10)
        outage.stop()
        s3fs.S3FileSystem.clear_instance_cache()
