"""The checks a run makes on its input and output before anything starts, without Prefect.

`gani invert` calls `check_run_inputs` before it starts its temporary Prefect server (which
must come before Prefect is imported, cli/server.py) and before it prints what the run will
use, so a bad INPUT or `--out` is one error line and nothing else; `flows.invert.run_invert`
calls it too, for Python callers.
"""
from __future__ import annotations

from gani import io
from gani.config import ConfigError, check_uris
from gani.redact import redact_uri
from gani.stages.plan import check_output_root


def is_file(uri: str) -> bool:
    """True when `uri` names one file (a local file or an S3 object), not a folder/prefix."""
    try:
        fs, path = io.filesystem(uri)
        return bool(fs.isfile(path))
    except Exception:  # noqa: BLE001 - the listing will say what is wrong
        return False


def check_run_inputs(input_uri: str, output_uri: str) -> None:
    """Refuse credentials in either URI (ConfigError), a missing input (FileNotFoundError),
    an input that is one file, and an output root that is unusable or overlaps the input
    (ConfigError, `check_output_root`)."""
    check_uris(input_uri=input_uri, output_uri=output_uri)
    if not io.exists(input_uri):
        raise FileNotFoundError(f"input not found: {redact_uri(input_uri)}")
    if is_file(input_uri):
        raise ConfigError(f"INPUT {redact_uri(input_uri)!r} is a file: give the folder (or "
                          f"s3:// prefix) that holds the images; for one image, a folder "
                          f"with that image")
    check_output_root(input_uri, output_uri)
