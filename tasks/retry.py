"""Which failures a task retries, how often, and what a failure that stays is called.

Every task retries transient faults (network, S3, MLflow server, timeouts: `is_transient`)
orchestration.retries times after orchestration.retry_delay_seconds * 2**k (±50 % jitter):
`retry_policy`, applied once per flow run to every task (`tasks.pipeline.Tasks`). Bad
input is not an exception (the stage quarantines it); configuration, missing-checkpoint,
refused-access and programming errors are not retried. What is left failing becomes a
failed image whose reason is `failure_reason(stage, exc)` (docs/pipeline.md, "Faults and
retries").
"""
from __future__ import annotations

import errno
from typing import Any, Optional

from gani.config import Settings
from gani.stages.common import StageError

PERMANENT = (StageError, ValueError, TypeError, KeyError, NotImplementedError,
             FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError,
             FileExistsError)
TRANSIENT_MODULES = ("botocore", "aiobotocore", "boto3", "urllib3", "requests", "aiohttp",
                     "s3fs", "http", "socket", "ssl")
# an OSError with one of these errnos is a request the store refused (s3fs turns S3's 4xx
# codes into them: InvalidArgument, KeyTooLongError, EntityTooLarge, MethodNotAllowed, ...)
# or a store that cannot take writes (disk full, quota, read-only): the image fails
# `storage_error` at once instead of waiting out the retries
PERMANENT_ERRNOS = frozenset(getattr(errno, n) for n in (
    "EINVAL", "ENAMETOOLONG", "EMSGSIZE", "ENOSYS", "EPERM", "EACCES", "EROFS", "EEXIST",
    "EISDIR", "ENOTDIR",
    # a full or read-only disk, a quota: a retry seconds later writes into the same wall
    "ENOSPC", "EDQUOT", "EFBIG") if hasattr(errno, n))
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
MLFLOW_TRANSIENT_CODES = ("TEMPORARILY_UNAVAILABLE", "INTERNAL_ERROR", "REQUEST_LIMIT_EXCEEDED")


def _client_error_transient(exc: BaseException) -> Optional[bool]:
    """For a botocore ClientError (or an error s3fs translated from one, kept as
    __cause__): 5xx, 408, 429 and throttling codes are transient, other 4xx permanent.
    None when `exc` carries no HTTP response."""
    err: Optional[BaseException] = exc
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


def _mlflow_transient(exc: BaseException) -> Optional[bool]:
    """For an MlflowException: server unavailable / overloaded / unreachable. None for
    any other exception."""
    try:
        from mlflow.exceptions import MlflowException
    except ImportError:  # pragma: no cover
        return None
    if not isinstance(exc, MlflowException):
        return None
    text = str(exc).lower()
    return (str(getattr(exc, "error_code", "")) in MLFLOW_TRANSIENT_CODES
            or "max retries" in text or "connection" in text or "timed out" in text)


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
    mlflow = _mlflow_transient(exc)
    if mlflow is not None:
        return mlflow
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, PERMANENT):
        return False
    http = _client_error_transient(exc)
    if http is not None:
        return http
    if isinstance(exc, OSError):
        return exc.errno not in PERMANENT_ERRNOS
    top = (type(exc).__module__ or "").split(".")[0]
    if top == "botocore" and type(exc).__name__ in PERMANENT_BOTOCORE:
        return False
    return top in TRANSIENT_MODULES


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
    """Prefect's `retry_condition_fn`: retry only what `is_transient` calls weather."""
    exc = state.data if isinstance(state.data, BaseException) else None
    if exc is None:
        try:
            exc = state.result(raise_on_failure=False)
        except Exception:  # noqa: BLE001
            return False
    return isinstance(exc, BaseException) and is_transient(exc)


def retry_policy(settings: Settings) -> dict[str, Any]:
    """The retry options of every task (Prefect `Task.with_options`), from `orchestration`."""
    o = settings.orchestration
    return {"retries": o.retries,
            "retry_delay_seconds": [o.retry_delay_seconds * 2 ** i
                                    for i in range(max(o.retries, 1))],
            "retry_jitter_factor": 0.5, "retry_condition_fn": retry_transient}
