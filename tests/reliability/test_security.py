"""Security: hostile file names / object keys never write outside the output root, and
credentials never appear in anything a run wrote or printed.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from gani import io
from gani.stages import Layout, run_pipeline
from gani.stages.demo_data import demo_images

from .gani_runs import run_captured

ROOT = Path(__file__).resolve().parents[2]

HOSTILE_NAMES = [
    "..jpg.png", "..\\..\\..\\evil.png", "C:\\Windows\\evil.png", "%2e%2e%2f%2e%2e%2fenc.png",
    "new\nline.png", "tab\there.png", "sp ace  twice.png", "ünïcödé 照片.png", "-rf.png",
    "$(touch PWNED).png", "semi;colon|pipe>out.png", "a" * 240 + ".png",
]
S3_KEYS = [
    "in/a/../../x.png", "in/../escape.png", "in/%2e%2e/enc.png", "in/sp ace/ü.png",
    "in//double.png", "in/./dot.png", "in/C:\\evil.png",
]


def all_files(top: Path) -> set[str]:
    return {os.fsdecode(os.path.join(d, f)) for d, _, fs in os.walk(os.fsencode(top))
            for f in fs}


def _settings(shrink, **extra):
    from gani.config import load_settings

    return shrink(load_settings(ROOT / "params.yaml", "demo_random"),
                  **{"tracking.enabled": "false", "align.method": "resize", **extra})


@pytest.mark.slow
def test_hostile_local_file_names_stay_inside_the_root(tmp_path, shrink, reliability):
    data = tmp_path / "photos"
    (data / "sub dir" / "...").mkdir(parents=True)
    astronaut = demo_images()["astronaut.png"]
    names = HOSTILE_NAMES + ["sub dir/.../deep.png"]
    for name in names:
        (data / name).write_bytes(astronaut)
    before = all_files(tmp_path)
    root = tmp_path / "out"
    summary = run_pipeline(str(data), Layout(str(root)), _settings(shrink))
    new = all_files(tmp_path) - before
    outside = sorted(p for p in new if not io.within(str(root), p))
    assert outside == []
    # hidden files and folders (a part starting with '.') are not inputs, by design
    visible = [n for n in names if not any(p.startswith(".") for p in n.split("/"))]
    assert len(visible) == len(names) - 3
    assert summary["counts"] == {"done": len(visible), "quarantined": 0, "failed": 0}
    ids = [p.name for p in root.iterdir() if p.is_dir()]
    assert len(ids) == len(visible)
    for image_id in ids:
        assert image_id.isascii() and "/" not in image_id and not image_id.startswith(".")
        assert len(image_id) <= io.MAX_ID_LENGTH
        assert json.loads((root / image_id / "status.json").read_text())["state"] == "done"
    # no file was created anywhere else (not in cwd, not in the input folder)
    assert not any(p.startswith(str(data)) for p in new)
    assert not (tmp_path / "evil.png").exists() and not Path("PWNED").exists()
    reliability.from_summary("security", f"{len(names)} hostile local file names", summary,
                             data_lost=len(outside) + summary["counts"]["failed"],
                             note="all done under safe ids inside the root")


@pytest.mark.slow
@pytest.mark.service
def test_hostile_s3_keys_stay_inside_the_output_prefix(s3_bucket, shrink, reliability):
    import boto3

    s3 = boto3.client("s3")
    astronaut = demo_images()["astronaut.png"]
    for key in S3_KEYS:
        s3.put_object(Bucket=s3_bucket, Key=key, Body=astronaut)
    stored = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket)["Contents"])
    summary = run_pipeline(f"s3://{s3_bucket}/in", Layout(f"s3://{s3_bucket}/out"),
                           _settings(shrink))
    after = sorted(o["Key"] for o in s3.get_paginator("list_objects_v2").paginate(
        Bucket=s3_bucket).build_full_result()["Contents"])
    new = sorted(set(after) - set(stored))
    outside = [k for k in new if not k.startswith("out/") or "/../" in f"/{k}/"
               or "/./" in f"/{k}/"]
    assert outside == []
    assert "out/summary.json" in new
    images = [k for k in stored if k.startswith("in/")]
    listed = io.list_images(f"s3://{s3_bucket}/in")
    # a key with a '.'-part ('..', '.') is hidden by the listing rule (docs: Bad input)
    visible = [k for k in S3_KEYS if not any(p.startswith(".") for p in k.split("/")[1:])]
    assert len(listed) == len(visible) and summary["images"] == len(listed)
    assert summary["counts"]["done"] == len(listed) and summary["counts"]["failed"] == 0
    ids = {k.split("/")[1] for k in new if k.count("/") >= 2}
    for image_id in ids:
        assert image_id.isascii() and image_id not in (".", "..") and not image_id.startswith(".")
    reliability.from_summary("security", f"{len(S3_KEYS)} hostile S3 keys (moto)", summary,
                             data_lost=len(outside) + summary["counts"]["failed"],
                             note=f"stored as {len(images)} keys; all outputs under out/")


# --------------------------------------------------------------------------- ids

def test_hostile_relative_paths_map_to_ids_inside_the_root(tmp_path, reliability):
    """What list_images could hand over (S3 keys may hold anything): every id is one safe
    folder name, and every artifact URI of it lies inside the root, locally and on S3."""
    from gani.stages import Layout

    rels = ["/etc/passwd.png", "../../x.png", "a/../../b.png", "..", ".", "...png",
            "C:\\x.png", "\\\\server\\share\\x.png", "%2e%2e/x.png", "a/./b.png",
            "x\x00y.png", "caf\udce9.png", "-" * 300 + ".png", "A.png", "a.png",
            "sub/.git/config.png", "~/x.png", "$HOME/x.png"]
    ids = io.image_ids(rels)
    assert len(set(ids)) == len(rels)                          # never two files in one folder
    assert len({i.lower() for i in ids}) == len(rels)          # not even on a case-folding disk
    escapes = 0
    for root in (str(tmp_path / "out"), "s3://bucket/out"):
        layout = Layout(root)
        for image_id in ids:
            assert image_id.isascii() and len(image_id) <= io.MAX_ID_LENGTH
            assert not image_id.startswith((".", "-")) and "/" not in image_id
            for artifact in ("aligned", "status", "metrics"):
                escapes += not io.within(root, layout.uri(image_id, artifact))
            escapes += not io.within(root, layout.marker_uri(image_id, "align"))
    assert escapes == 0
    for bad in ("..", ".", "a/b", "a\\b", ".hidden", ""):
        with pytest.raises(ValueError, match="unsafe image id"):
            Layout(str(tmp_path)).uri(bad, "status")
    reliability.add("security", f"{len(rels)} hostile relative paths -> ids (local + S3 root)",
                    images=len(rels), data_lost=escapes,
                    note="unique safe ids; Layout refuses unsafe ones")


# --------------------------------------------------------------------------- credentials

AWS_SECRET = "AWSSECRETgani7Qx9Zr2"
TRACK_SECRET = "TRACKPASSgani4Kv8Wd1"
TOKEN_SECRET = "QUERYTOKENgani3Mn5Tb6"
SECRETS = (AWS_SECRET, TRACK_SECRET, TOKEN_SECRET)


def leaks_in(blob: bytes, where: str) -> list[str]:
    return [f"{where}: {s}" for s in SECRETS
            if s.encode() in blob or s.encode("utf-16-le") in blob]


def leaks_in_tree(top: Path) -> list[str]:
    out = []
    for path in sorted(all_files(top)):
        try:
            data = Path(path).read_bytes()
        except OSError:
            continue
        out += leaks_in(data, path)
    return out


def prefect_records(flow_run_id: str) -> dict[str, str]:
    """What the Prefect API keeps of a flow run and everything around it, as text: its
    parameters, its (sub)flow runs' parameters, every log line and artifact."""
    from prefect.client.orchestration import get_client
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)          # logs go to the API in batches
    with get_client(sync_client=True) as client:
        main = client.read_flow_run(flow_run_id)
        runs = client.read_flow_runs(limit=200)
        logs, page = [], [None]
        while page and len(logs) < 20_000:          # the API serves 200 lines at a time
            page = client.read_logs(limit=200, offset=len(logs))
            logs += page
        artifacts = client.read_artifacts(limit=200)
    assert any(r.id == main.id for r in runs)
    return {
        "parameters": json.dumps([r.parameters for r in runs], default=str),
        "names": json.dumps([r.name for r in runs]),
        "logs": "\n".join(log.message for log in logs),
        "artifacts": json.dumps([a.data for a in artifacts], default=str),
        "main_parameters": json.dumps(main.parameters, default=str),
    }


@pytest.mark.slow
@pytest.mark.service
def test_credentials_never_written_or_logged(prefect_api, mlflow_sqlite, tmp_path, shrink,
                                             monkeypatch, reliability):
    """AWS keys and MLflow credentials in the environment (where they belong): after a
    tracked Prefect run, no printed line, output file, mlruns file, mlflow.db byte, MLflow
    param/tag, Prefect flow-run parameter, Prefect log or artifact holds any of them."""
    from mlflow.tracking import MlflowClient

    from flows.invert import run_invert

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAGANITEST")
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN_SECRET)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", TRACK_SECRET)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "gani")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", TOKEN_SECRET)
    data = tmp_path / "photos"
    data.mkdir()
    demo = demo_images()
    for name in ("astronaut.png", "broken.jpg"):
        (data / name).write_bytes(demo[name])
    out = tmp_path / "out"
    settings = _settings(shrink, **{"tracking.enabled": "true", "tracking.uri": mlflow_sqlite})
    summary, printed = run_captured(run_invert, str(data), str(out), settings,
                                    dataset_name="photos")
    assert "MLflow" in printed or "mlflow" in printed   # the capture saw the run's output
    assert summary["counts"] == {"done": 1, "quarantined": 1, "failed": 0}
    assert summary["tracking"] == "ok"
    leaks = leaks_in(printed.encode(), "stdout/stderr")
    leaks += leaks_in_tree(tmp_path)        # output root, mlruns/, mlflow.db, anything else
    client = MlflowClient(mlflow_sqlite)
    exp = client.get_experiment_by_name(settings.tracking.experiment.format(
        dataset="photos", profile=settings.profile))
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 3                                       # parent + 2 images
    # settings are logged as they are, tracking.uri included: why a password there is refused
    assert any(r.data.params.get("tracking.uri") == mlflow_sqlite for r in runs)
    for r in runs:
        blob = json.dumps({"params": r.data.params, "tags": r.data.tags})
        leaks += leaks_in(blob.encode(), f"MLflow run {r.info.run_id}")
    records = prefect_records(summary["prefect_flow_run_id"])
    assert str(data) in records["main_parameters"]          # the parameters were read back,
    assert mlflow_sqlite in records["main_parameters"]      # the settings among them
    assert records["logs"]                                  # and the run's log lines
    for kind, text in records.items():
        leaks += leaks_in(text.encode(), f"Prefect {kind}")
    assert leaks == []
    reliability.from_summary("security", "credentials in env never written or logged",
                             summary, data_lost=len(leaks),
                             note="stdout/stderr, output root, mlruns, mlflow.db, MLflow "
                                  "params/tags, Prefect parameters/logs/artifacts")


def _cli_refuses(tmp_path, capsys, argv_tail: list[str], input_uri: str, out_uri: str):
    from cli.main import EXIT_CONFIG, main

    argv = ["invert", input_uri, "--out", out_uri, "--profile", "demo_random",
            "--params", str(ROOT / "params.yaml"), "--set", "tracking.enabled=false",
            *argv_tail]
    rc = main(argv)
    cap = capsys.readouterr()
    assert rc == EXIT_CONFIG, (rc, cap.err)
    return cap.out + cap.err


@pytest.mark.parametrize("case, where, uri", [
    ("tracking URI with user:password@", "tracking",
     f"http://gani:{TRACK_SECRET}@mlflow:5000"),
    ("PostgreSQL tracking store with a password", "tracking",
     f"postgresql://gani:{TRACK_SECRET}@db:5432/mlflow"),
    ("input s3:// URI with a presigned token", "input",
     f"s3://bucket/photos?X-Amz-Security-Token={TOKEN_SECRET}"),
    ("input s3:// URI with key:secret@", "input", f"s3://AKIAGANI:{AWS_SECRET}@bucket/photos"),
    ("output s3:// URI with key:secret@", "out", f"s3://AKIAGANI:{AWS_SECRET}@bucket/out"),
    ("tracking URI with TOKEN@host", "tracking", f"http://{TOKEN_SECRET}@mlflow:5000/"),
    ("tracking URI with ?access_token=", "tracking",
     f"http://mlflow:5000/?access_token={TOKEN_SECRET}"),
    ("tracking URI with ?X-Amz-Signature=", "tracking",
     f"https://mlflow/api?X-Amz-Date=1&X-Amz-Signature={TOKEN_SECRET}"),
    ("tracking URI with ?sig=", "tracking", f"https://mlflow/?sv=1&sig={TOKEN_SECRET}"),
    ("tracking URI with ?token=", "tracking", f"https://mlflow/?token={TOKEN_SECRET}"),
    ("tracking URI with ?key=", "tracking", f"https://mlflow/?key={TOKEN_SECRET}"),
    ("tracking URI with ?password=", "tracking", f"https://mlflow/?password={TRACK_SECRET}"),
    ("tracking URI with #access_token= fragment", "tracking",
     f"https://mlflow/#access_token={TOKEN_SECRET}"),
    ("input s3:// URI with TOKEN@", "input", f"s3://{TOKEN_SECRET}@bucket/photos"),
    ("output s3:// URI with ?sig=", "out", f"s3://bucket/out?sig={TOKEN_SECRET}"),
])
def test_credentials_in_a_uri_are_refused_without_echoing_them(tmp_path, capsys, monkeypatch,
                                                              reliability, case, where, uri):
    """A URI carrying a secret would be logged everywhere (Prefect parameters, MLflow params
    and tags, summary.json, params.yaml in git): `gani invert` refuses it with exit 2 before
    anything runs, names the fix, and never prints the secret."""
    monkeypatch.chdir(tmp_path)
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "astronaut.png").write_bytes(demo_images()["astronaut.png"])
    out = tmp_path / "out"
    input_uri, out_uri, tail = str(photos), str(out), []
    if where == "tracking":
        tail = ["--set", "tracking.enabled=true", "--set", f"tracking.uri={uri}"]
    elif where == "input":
        input_uri = uri
    else:
        out_uri = uri
    text = _cli_refuses(tmp_path, capsys, tail, input_uri, out_uri)
    leaks = leaks_in(text.encode(), "stdout/stderr") + leaks_in_tree(tmp_path)
    assert leaks == []
    hint = "MLFLOW_TRACKING_PASSWORD" if where == "tracking" else "AWS_SECRET_ACCESS_KEY"
    assert "credentials" in text and hint in text, text
    assert not out.exists() and not (tmp_path / "mlflow.db").exists()
    reliability.add("security", f"refused: {case}", images=1, data_lost=len(leaks),
                    note="exit 2, secret not echoed, nothing written")


def test_python_api_refuses_credentials_in_uris(tmp_path):
    """`flows.invert.run_invert` (the Python entry point) refuses a credential-bearing URI
    the same way the CLI does, before touching the input or output."""
    from flows.invert import run_invert
    from gani.config import ConfigError, load_settings

    settings = load_settings("params.yaml", "demo_random")
    out = tmp_path / "out"
    for inp, outp in ((f"s3://AKIAGANI:{AWS_SECRET}@bucket/photos", str(out)),
                      (str(tmp_path), f"s3://bucket/out?X-Amz-Security-Token={TOKEN_SECRET}")):
        with pytest.raises(ConfigError) as err:
            run_invert(inp, outp, settings)
        assert "credentials" in str(err.value)
        assert all(secret not in str(err.value) for secret in SECRETS)
    assert not out.exists()


CREDENTIAL_URIS = [
    f"http://gani:{TRACK_SECRET}@mlflow:5000", f"http://{TOKEN_SECRET}@mlflow:5000/",
    f"http://a@{TOKEN_SECRET}@mlflow/", f"http://mlflow/?access_token={TOKEN_SECRET}",
    f"https://m/?X-Amz-Signature={TOKEN_SECRET}", f"https://m/?sig={TOKEN_SECRET}",
    f"https://m/?token={TOKEN_SECRET}", f"https://m/?key={TOKEN_SECRET}",
    f"https://m/?password={TRACK_SECRET}", f"https://m/#access_token={TOKEN_SECRET}",
    f"s3://{TOKEN_SECRET}@bucket/x", f"postgresql://gani:{TRACK_SECRET}@db/mlflow"]


def test_settings_refuse_every_credential_form_in_every_uri_setting(reliability):
    """Settings built directly (a deployment's `settings` parameter, Python) refuse each form
    in tracking.uri and in any other string setting (edit.ganspace_file, checkpoints), and
    the error never echoes the secret; a database URI may name its user."""
    from pydantic import ValidationError

    from gani.config import ConfigError, Settings, load_settings

    refused = 0
    for uri in CREDENTIAL_URIS:
        for key in ("tracking.uri", "edit.ganspace_file", "models.generator.checkpoint"):
            with pytest.raises(ConfigError) as err:
                load_settings(ROOT / "params.yaml", "demo_random", [f"{key}={uri}"])
            assert all(x not in str(err.value) for x in SECRETS), (key, str(err.value))
            refused += 1
        with pytest.raises(ValidationError):
            Settings.model_validate({"tracking": {"uri": uri}})
    for fine in ("postgresql://gani@db:5432/mlflow", "sqlite:///mlflow.db?timeout=5",
                 "http://mlflow:5000", "https://mlflow/?experiment=3"):
        assert Settings.model_validate({"tracking": {"uri": fine}}).tracking.uri == fine
    reliability.add("security", f"{len(CREDENTIAL_URIS)} credential forms x 3 URI settings",
                    faults_injected=refused, faults_survived=refused,
                    note="each refused at validation, the secret never echoed")


def test_redact_text_scrubs_every_form_inside_free_text():
    """What an exception message or a log line may quote: every URI form and
    `secret_name=value` pairs are scrubbed; ordinary text is left alone."""
    from gani.redact import redact_obj, redact_text

    for uri in CREDENTIAL_URIS:
        for text in (f"ConnectionError: Max retries exceeded with url: {uri} (x)",
                     f"redirected to '{uri}'", f"<{uri}>"):
            red = redact_text(text)
            assert all(x not in red for x in SECRETS), red
    red = redact_text(f"failed (access_token={TOKEN_SECRET}&X-Amz-Signature={TOKEN_SECRET}) "
                      f"Authorization: Bearer {TOKEN_SECRET}")
    assert all(x not in red for x in SECRETS), red
    plain = "OSError: [Errno 28] No space left on device: '/data/out/a@b?.png' exit code 1"
    assert redact_text(plain) == plain
    nested = redact_obj({"e": [f"http://{TOKEN_SECRET}@h/"], "n": 1})
    assert nested == {"e": ["http://h/"], "n": 1}


@pytest.mark.slow
@pytest.mark.service
def test_secret_in_an_mlflow_error_never_written_or_logged(prefect_api, tmp_path, shrink,
                                                           monkeypatch, capfd, reliability):
    """MLflow fails with an exception that quotes URLs with tokens (a proxy's redirect):
    summary.json's tracking_error, status files, stdout/stderr and Prefect's logs and
    parameters keep the message without any secret."""
    import tracking.logical_run as logical_run
    from flows.invert import run_invert

    def refuse(*args, **kwargs):
        raise ConnectionError(f"redirected to http://gani:{TRACK_SECRET}@proxy/login?"
                              f"access_token={TOKEN_SECRET} (token={TOKEN_SECRET})")

    monkeypatch.setattr(logical_run, "open_parent", refuse)
    data = tmp_path / "photos"
    data.mkdir()
    (data / "astronaut.png").write_bytes(demo_images()["astronaut.png"])
    out = tmp_path / "out"
    settings = _settings(shrink, **{"tracking.enabled": "true",
                                    "tracking.uri": f"sqlite:///{tmp_path}/mlflow.db",
                                    "orchestration.retries": "0"})
    summary, printed = run_captured(run_invert, str(data), str(out), settings,
                                    dataset_name="photos")
    assert summary["counts"]["done"] == 1 and summary["tracking"] == "unavailable"
    assert "redirected to http://proxy/login" in summary["tracking_error"]
    printed += "".join(capfd.readouterr())     # Prefect's console handler keeps its stream
    leaks = leaks_in(printed.encode(), "stdout/stderr") + leaks_in_tree(tmp_path)
    leaks += leaks_in(json.dumps(summary).encode(), "returned summary")
    records = prefect_records(summary["prefect_flow_run_id"])
    assert "redirected to" in records["logs"]               # the failure was logged,
    for kind, text in records.items():                      # without the secret
        leaks += leaks_in(text.encode(), f"Prefect {kind}")
    assert leaks == []
    reliability.from_summary("security", "secret quoted by an MLflow error", summary,
                             faults_injected=1, faults_survived=1, data_lost=len(leaks),
                             note="summary.json tracking_error, stdout, Prefect logs: redacted")


def test_redaction_of_uris_with_credentials():
    """What the run logs for input/output/tracking URIs drops user:password@ and queries
    (tracking's redact_uri is gani/redact.py's)."""
    from gani.redact import redact_uri as redact
    from gani.redact import uri_credentials
    from tracking import redact_uri

    for uri in (f"http://gani:{TRACK_SECRET}@mlflow:5000",
                f"s3://bucket/photos?X-Amz-Security-Token={TOKEN_SECRET}",
                f"https://user:{TRACK_SECRET}@host/p?token={TOKEN_SECRET}"):
        for red in (redact_uri(uri), redact(uri)):
            assert all(s not in red for s in SECRETS), red
            assert red.split("://")[0] == uri.split("://")[0]
        assert uri_credentials(uri)
    for fine in ("s3://bucket/photos", "/data/photos@2x?", "sqlite:///mlflow.db?timeout=5",
                 "http://mlflow:5000"):
        assert uri_credentials(fine) is None, fine


def test_malicious_pickle_never_runs_anywhere(tmp_path, reliability):
    """A pickle whose __reduce__ would create a marker file: refused by every loader the
    pipeline has (checkpoint files, `gani checkpoints import`, the pipeline's own latent
    files read back on resume); the marker never appears and nothing is imported."""
    import torch

    from gani.checkpoints import CheckpointLoadError, import_files, load_checkpoint
    from gani.stages.common import load_tensor

    marker = tmp_path / "PWNED"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch '{marker}'",))

    evil = tmp_path / "e4e_cars_encode.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "opts": Evil()}, evil)
    refused = 0
    with pytest.raises(CheckpointLoadError, match="refused to load"):
        load_checkpoint(evil)
    refused += 1
    with pytest.raises(CheckpointLoadError, match="refused to load"):
        import_files([evil], tmp_path / "data")
    refused += 1
    assert not (tmp_path / "data" / "checkpoints" / "e4e_cars_encode.pt").exists()
    with pytest.raises(Exception) as err:
        load_tensor(evil.read_bytes())
    assert "Unsupported global" in str(err.value) or "GLOBAL" in str(err.value)
    refused += 1
    assert not marker.exists()
    reliability.add("security", "malicious pickle (__reduce__ -> os.system)",
                    faults_injected=3, faults_survived=refused, data_lost=int(marker.exists()),
                    note="checkpoint load, checkpoints import, latent read-back: refused")
