"""Shared fixtures for service-backed tests (all lazy: nothing starts unless a test asks).

- `moto_s3`: a real S3-compatible server (moto's ThreadedMotoServer) on 127.0.0.1 for the
  whole session; sets AWS_* credentials/region and AWS_ENDPOINT_URL_S3 (read by boto3,
  s3fs/aiobotocore and DVC), MLFLOW_S3_ENDPOINT_URL (mlflow server), and returns the URL.
- `s3_bucket`: a fresh bucket on it per test (name returned).
- `prefect_api`: an isolated Prefect API (prefect_test_harness: temporary SQLite-backed
  server) for the session, with PREFECT_HOME in a temp folder.
- `mlflow_sqlite`: a tracking URI `sqlite:///<tmp>/mlflow.db` (artifacts under <tmp>).
- `tiny_settings`: the random-network profile (demo_random) shrunk to run in seconds on 2 CPU
  cores (the demo profile runs the trained testbed: tests/pipeline/test_demo.py).
- `tiny_g`: a tiny stand-in generator (tests/tiny_generator.py) for editing and metrics.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def prefect_logging_on_session_stderr():
    """Prefect sets its logging up once per process, on first use, and its console handler
    keeps the stderr of that moment. When that moment falls inside a test that captures
    output (`capsys`: the CLI run in-process), the handler keeps that test's stream, which is
    closed when the test ends, and every later flow in the session fails to log ("I/O
    operation on closed file", then RecursionError). A real `gani` process has one stderr;
    setting Prefect's logging up at session start gives the tests the same."""
    from prefect.logging.configuration import ensure_logging_setup

    ensure_logging_setup()
    yield


@pytest.fixture(scope="session")
def moto_s3():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL_S3": url,
           "MLFLOW_S3_ENDPOINT_URL": url}
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("AWS_PROFILE", raising=False)
        mp.delenv("AWS_SESSION_TOKEN", raising=False)
        for k, v in env.items():
            mp.setenv(k, v)
        import fsspec

        fsspec.config.conf.pop("s3", None)
        yield url
    server.stop()


@pytest.fixture
def s3_bucket(moto_s3):
    import boto3

    name = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_s3).create_bucket(Bucket=name)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    return name


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PREFECT_HOME", str(home))
        mp.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        mp.setenv("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
        from prefect.testing.utilities import prefect_test_harness

        with prefect_test_harness(server_startup_timeout=120):
            yield home


@pytest.fixture
def mlflow_sqlite(tmp_path, monkeypatch):
    """A private SQLite tracking store; the cwd moves to tmp_path so ./mlruns lands there."""
    monkeypatch.chdir(tmp_path)
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def shrink(settings, **extra):
    """The random-network profile (demo_random), smaller still (tests): 32-px generator,
    2 steps, small PCA."""
    from gani.config import resolve

    dump = settings.model_dump(mode="json")
    dump["models"]["generator"].update(size=32, style_dim=32, n_mlp=2, channel_max=32)
    dump["models"]["encoder"]["width_div"] = 16
    dump["tune"].update(steps=2, batch_size=2, log_every=1)
    dump["encode"]["projection_steps"] = 2
    dump["edit"].update(pca_samples=64, factors=[-2.0, 2.0])
    dump["evaluate"].update(locality_n=1, size=64)
    dump["orchestration"].update(max_concurrency=2, retries=1, retry_delay_seconds=0.0)
    overrides = [f"{k}={v}" for k, v in extra.items()]
    return resolve({**dump, "profiles": {dump["profile"]: {}}}, dump["profile"], overrides)


@pytest.fixture(name="shrink", scope="session")
def shrink_fixture():
    """The `shrink(settings, **overrides)` helper, for tests that vary tiny settings."""
    return shrink


@pytest.fixture
def tiny_settings():
    from gani.config import load_settings

    return shrink(load_settings(ROOT / "params.yaml", "demo_random"))


@pytest.fixture
def tiny_g():
    from tests.tiny_generator import TinyGenerator

    return TinyGenerator()
