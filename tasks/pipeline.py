"""Prefect tasks: thin wrappers that move URIs and small manifests (`ImageItem`) in and out
of `gani.stages`. No tensors cross a task boundary; every result lives under the output
root, so any task can run on any machine and a re-run picks up what is there.

Retries: every task retries transient faults (network, S3, MLflow server, timeouts; see
`is_transient`) with exponential backoff (`with_retries`: orchestration.retries times,
orchestration.retry_delay_seconds * 2**k, ±50 % jitter); bad input is not an exception here
(the stage quarantines it), and configuration, missing-checkpoint, refused-access and
programming errors are not retried. What is left failing becomes a failed image whose reason
is `failure_reason(stage, exc)`.
"""
from __future__ import annotations

import errno
import socket
import threading
from contextlib import nullcontext
from typing import Any, Optional

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from gani.config import Settings
from gani.stages import (ImageItem, Layout, align_image, edit_image, encode_image,
                         evaluate_image, get_runtime, plan, summarize_run, tune_batch)
from gani.stages.common import StageError

PERMANENT = (StageError, ValueError, TypeError, KeyError, NotImplementedError,
             FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError,
             FileExistsError)
TRANSIENT_MODULES = ("botocore", "aiobotocore", "boto3", "urllib3", "requests", "aiohttp",
                     "s3fs", "http.client", "socket", "ssl")
# an OSError with one of these errnos is a request the store refused (s3fs turns S3's 4xx
# codes into them: InvalidArgument, KeyTooLongError, EntityTooLarge, MethodNotAllowed, ...)
PERMANENT_ERRNOS = frozenset(getattr(errno, n) for n in (
    "EINVAL", "ENAMETOOLONG", "EMSGSIZE", "ENOSYS", "EPERM", "EACCES", "EROFS", "EEXIST",
    "EISDIR", "ENOTDIR") if hasattr(errno, n))
# botocore errors that are configuration, not weather: retrying cannot help
PERMANENT_BOTOCORE = ("NoCredentialsError", "PartialCredentialsError", "NoRegionError",
                      "ParamValidationError", "UnknownServiceError", "ProfileNotFound",
                      "InvalidConfigError", "UnknownEndpointError", "InvalidRegionError",
                      "InvalidS3AddressingStyleError", "UnknownSignatureVersionError",
                      "DataNotFoundError", "ValidationError")
THROTTLING_CODES = ("SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded",
                    "TooManyRequestsException", "RequestThrottled", "RequestTimeout",
                    "RequestTimeoutException", "InternalError", "ServiceUnavailable",
                    "OperationAborted")


def _client_error_transient(exc: BaseException) -> Optional[bool]:
    """For a botocore ClientError (or an error s3fs translated from one, kept as
    __cause__): 5xx, 408, 429 and throttling codes are transient, other 4xx permanent.
    None when `exc` carries no HTTP response."""
    err = exc
    for _ in range(3):
        response = getattr(err, "response", None)
        if isinstance(response, dict) and ("Error" in response
                                           or "ResponseMetadata" in response):
            code = str((response.get("Error") or {}).get("Code", ""))
            status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
            if code in THROTTLING_CODES:
                return True
            if isinstance(status, int):
                return status >= 500 or status in (408, 429)
            return None
        err = err.__cause__
        if err is None:
            return None
    return None


def is_transient(exc: BaseException) -> bool:
    """Network / remote-store / tracking-server faults worth retrying.

    Transient: connection and timeout errors (builtin, botocore, aiohttp, urllib3,
    requests), S3 5xx / 408 / 429 / throttling answers, other OSErrors (I/O errors), MLflow
    "temporarily unavailable" / connection failures. Permanent: bad input and programming
    errors (ValueError, TypeError, KeyError, StageError), missing files and refused access
    (FileNotFoundError, PermissionError: S3's NoSuchKey / AccessDenied after s3fs), other S3
    4xx answers, botocore configuration errors (no credentials, bad parameters), and
    everything else (out of memory included: the tune stage halves its batch itself).
    """
    try:
        from mlflow.exceptions import MlflowException
    except ImportError:  # pragma: no cover
        MlflowException = ()  # type: ignore
    if MlflowException and isinstance(exc, MlflowException):
        code = str(getattr(exc, "error_code", ""))
        text = str(exc).lower()
        return code in ("TEMPORARILY_UNAVAILABLE", "INTERNAL_ERROR", "REQUEST_LIMIT_EXCEEDED") \
            or "max retries" in text or "connection" in text or "timed out" in text
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, PERMANENT):
        return False
    http = _client_error_transient(exc)
    if http is not None:
        return http
    if isinstance(exc, OSError):
        return exc.errno not in PERMANENT_ERRNOS
    module = type(exc).__module__ or ""
    top = module.split(".")[0]
    if top == "botocore" and type(exc).__name__ in PERMANENT_BOTOCORE:
        return False
    return top in {m.split(".")[0] for m in TRANSIENT_MODULES}


def is_storage_fault(exc: BaseException) -> bool:
    """An error of the stores a stage reads and writes (local disk, S3): an OSError
    (missing or refused object included) or a transient network / S3 fault."""
    return isinstance(exc, OSError) or (not isinstance(exc, PERMANENT) and is_transient(exc))


def failure_reason(stage: str, exc: BaseException) -> str:
    """The `reason` of an image whose `stage` task failed for good with `exc`:
    `out_of_memory` (device memory, even for one image), `storage_error` (the input or
    output store kept failing or refused the request), else `<stage>_error`."""
    from gani.tuning import TuningOOM
    from gani.tuning.common import is_oom

    if isinstance(exc, TuningOOM) or is_oom(exc):
        return "out_of_memory"
    if stage != "log" and is_storage_fault(exc):
        return "storage_error"
    return f"{stage}_error"


def retry_transient(task, task_run, state) -> bool:
    exc = state.data if isinstance(state.data, BaseException) else None
    if exc is None:
        try:
            exc = state.result(raise_on_failure=False)
        except Exception:  # noqa: BLE001
            return False
    return isinstance(exc, BaseException) and is_transient(exc)


TASK_DEFAULTS: dict[str, Any] = dict(
    retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=5),
    retry_jitter_factor=0.5, retry_condition_fn=retry_transient, cache_policy=NO_CACHE,
    persist_result=False,
)


def with_retries(t, settings: Settings):
    """The task with the retry count / base delay of `orchestration`."""
    o = settings.orchestration
    delays = [o.retry_delay_seconds * 2 ** i for i in range(max(o.retries, 1))]
    return t.with_options(retries=o.retries, retry_delay_seconds=delays)


def _layout(output_uri: str) -> Layout:
    return Layout(output_uri)


# --------------------------------------------------------------------------- planning

@task(name="plan", **TASK_DEFAULTS)
def plan_task(input_uri: str, output_uri: str, settings: Settings, data_dir: str = "data",
              only: Optional[list[str]] = None) -> list[ImageItem]:
    items = plan(input_uri, _layout(output_uri), settings, data_dir)
    if only is not None:
        wanted = set(only)
        items = [i for i in items if i.source in wanted]
    return items


# --------------------------------------------------------------------------- stages

@task(name="align", task_run_name="align-{item.image_id}", **TASK_DEFAULTS)
def align_task(item: ImageItem, output_uri: str, settings: Settings) -> ImageItem:
    return align_image(item, _layout(output_uri), settings)


@task(name="encode", task_run_name="encode-{item.image_id}", **TASK_DEFAULTS)
def encode_task(item: ImageItem, output_uri: str, settings: Settings,
                data_dir: str = "data") -> ImageItem:
    return encode_image(item, _layout(output_uri), settings, get_runtime(settings, data_dir))


_ENSURED: set[str] = set()
_ENSURED_LOCK = threading.Lock()


def gpu_limit_name(settings: Settings) -> str:
    """orchestration.gpu_limit with `{host}` replaced by this machine's name, so one limit
    per GPU box is `gpu:{host}` and a pool-wide one is a plain name."""
    return settings.orchestration.gpu_limit.format(host=socket.gethostname())


def ensure_gpu_limit(name: str, slots: int) -> None:
    """Create the global concurrency limit `name` with `slots` slots if it does not exist."""
    with _ENSURED_LOCK:
        if name in _ENSURED:
            return
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
        from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

        with get_client(sync_client=True) as client:
            try:
                client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                try:
                    client.create_global_concurrency_limit(
                        GlobalConcurrencyLimitCreate(name=name, limit=slots))
                    print(f"created global concurrency limit {name!r} ({slots} slot(s))")
                except ObjectAlreadyExists:
                    pass
        _ENSURED.add(name)


@task(name="tune", **TASK_DEFAULTS)
def tune_task(items: list[ImageItem], output_uri: str, settings: Settings,
              data_dir: str = "data") -> list[ImageItem]:
    """Tune a batch; holds one slot of the GPU global concurrency limit when configured."""
    o = settings.orchestration
    slot = nullcontext()
    if o.use_gpu_limit:
        from prefect.concurrency.sync import concurrency

        name = gpu_limit_name(settings)
        ensure_gpu_limit(name, o.gpu_slots)
        slot = concurrency(name, occupy=1, strict=True)
    rt = get_runtime(settings, data_dir)
    with slot:
        return tune_batch(items, _layout(output_uri), settings, rt, progress=_print_progress)


def _print_progress(info: dict) -> None:
    losses = " ".join(f"{i}={v:.4g}" for i, v in zip(info.get("image_ids", []),
                                                      info.get("losses", [])))
    print(f"{info.get('method')} step {info.get('step')}/{info.get('steps')}: {losses}")


@task(name="edit", task_run_name="edit-{item.image_id}", **TASK_DEFAULTS)
def edit_task(item: ImageItem, output_uri: str, settings: Settings,
              data_dir: str = "data") -> ImageItem:
    return edit_image(item, _layout(output_uri), settings, get_runtime(settings, data_dir))


@task(name="evaluate", task_run_name="evaluate-{item.image_id}", **TASK_DEFAULTS)
def evaluate_task(item: ImageItem, output_uri: str, settings: Settings,
                  data_dir: str = "data") -> ImageItem:
    return evaluate_image(item, _layout(output_uri), settings, get_runtime(settings, data_dir))


# --------------------------------------------------------------------------- summary

@task(name="summarize", **TASK_DEFAULTS)
def summarize_task(items: list[ImageItem], output_uri: str, settings: Settings,
                   extra: dict[str, Any]) -> dict:
    """summary.json from every image's status/metrics on disk (this run's and earlier)."""
    return summarize_run(items, _layout(output_uri), settings, **extra)
