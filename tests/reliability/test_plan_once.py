"""A night is planned once: the parent flow lists the input and hashes every file one time,
and each shard (an in-process subflow, or a `gani-invert-shard` deployment run) receives
its ImageItem manifests and neither lists nor hashes the input again. Before, every shard
re-planned the whole dataset: reading cost grew with shards x dataset."""
from __future__ import annotations

import json
from collections import Counter

import pytest

from gani import io
from gani.stages.demo_data import demo_images

pytestmark = pytest.mark.slow

NAMES = ["astronaut.png", "astronaut_mirrored.jpg", "astronaut_tilted.png", "chelsea.png"]


def write_dataset(root, names=NAMES):
    files = demo_images()
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        (root / name).write_bytes(files[name])


@pytest.fixture
def counted(monkeypatch):
    """Counts of io.file_hash per URI and of input listings (io.list_input, which
    io.list_images calls)."""
    hashes, listings = Counter(), Counter()
    real_hash, real_list = io.file_hash, io.list_input

    def file_hash(uri, *a, **k):
        hashes[str(uri)] += 1
        return real_hash(uri, *a, **k)

    def list_input(uri, *a, **k):
        listings[str(uri)] += 1
        return real_list(uri, *a, **k)

    monkeypatch.setattr(io, "file_hash", file_hash)
    monkeypatch.setattr(io, "list_input", list_input)
    return hashes, listings


def test_each_file_hashed_once_per_night_with_many_shards(prefect_api, tmp_path, shrink,
                                                          tiny_settings, counted, reliability):
    from flows.invert import run_invert

    hashes, listings = counted
    data, out = tmp_path / "photos", tmp_path / "out"
    write_dataset(data)
    settings = shrink(tiny_settings, **{"tracking.enabled": "false",
                                        "orchestration.shard_size": 1})
    summary = run_invert(str(data), str(out), settings)
    assert summary["images"] == len(NAMES) and summary["processed"] == len(NAMES)
    assert summary["counts"]["done"] + summary["counts"]["quarantined"] == len(NAMES)
    sources = {str(data / n) for n in NAMES}
    assert {u for u in hashes if u.startswith(str(data))} == sources
    assert all(hashes[u] == 1 for u in sources), dict(hashes)     # 4 shards, 1 hash each
    assert listings[str(data)] == 1, dict(listings)
    reliability.from_summary("orchestration", "4 shards: each input hashed once, listed once",
                             summary, note=f"hash calls {sum(hashes[u] for u in sources)} for "
                             f"{len(sources)} files, listings {listings[str(data)]}")


def test_a_deployment_shard_gets_its_manifests_and_plans_nothing(prefect_api, tmp_path, shrink,
                                                                 tiny_settings, counted,
                                                                 monkeypatch, reliability):
    """The parameters `run_deployment` gets carry each shard's ImageItems (JSON), and the
    shard flow run from those parameters lists and hashes nothing."""
    import prefect.client.orchestration as orchestration
    import prefect.deployments as deployments

    from flows.invert import _run_shards_as_deployments, invert_shard
    from gani.stages import Layout, plan_items, shards
    from gani.stages.plan import checkpoint_fingerprints

    hashes, listings = counted
    data, out = tmp_path / "photos", tmp_path / "out"
    write_dataset(data, NAMES[:2])
    settings = shrink(tiny_settings, **{"tracking.enabled": "false"})
    items = plan_items(str(data), settings, Layout(str(out)),
                       checkpoint_fingerprints(settings))
    launched = []

    class Run:
        def __init__(self, name):
            self.id, self.name = name, name
            completed = type("T", (), {"value": "COMPLETED"})()
            self.state = type("S", (), {"is_final": lambda self: True, "name": "Completed",
                                        "type": completed, "message": ""})()

    def run_deployment(name, timeout=None, flow_run_name=None, parameters=None):
        launched.append(json.loads(json.dumps(parameters)))   # what the API would store
        return Run(flow_run_name)

    class Client:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read_flow_run(self, rid):
            return Run(rid)

    with monkeypatch.context() as m:     # the fakes only while the shards are launched
        m.setattr(deployments, "run_deployment", run_deployment)
        m.setattr(orchestration, "get_client", lambda sync_client=True: Client())
        m.setattr("flows.shards.time.sleep", lambda s: None)
        _run_shards_as_deployments(shards(items, 1), str(data), str(out), settings, None,
                                   "data", "gani-invert-shard/shard")
    assert len(launched) == 2
    assert [[i["image_id"] for i in p["items"]] for p in launched] == \
        [[items[0].image_id], [items[1].image_id]]
    assert "images" not in launched[0]

    hashes.clear()
    listings.clear()
    params = launched[0]
    report = invert_shard(params["input_uri"], params["output_uri"], settings,
                          parent_run_id=None, data_dir="data", label=params["label"],
                          items=params["items"])
    assert report["processed"] == 1
    assert not hashes and not listings, (dict(hashes), dict(listings))
    status = json.loads((out / items[0].image_id / "status.json").read_text())
    assert status["key"] == items[0].key

    # the same shard run again (a retried shard run): its image is skipped, not redone
    again = invert_shard(params["input_uri"], params["output_uri"], settings,
                         items=params["items"])
    assert again["processed"] == 0 and again["skipped"] == 1
    assert not hashes and not listings
    reliability.add("orchestration", "deployment shard runs get their manifests, plan nothing",
                    images=1, done=int(status["state"] == "done"),
                    quarantined=int(status["state"] == "quarantined"),
                    note="0 hash calls and 0 listings in the shard run and its retry")
