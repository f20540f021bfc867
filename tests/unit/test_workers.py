"""The pure parts of `recsrv run --workers N`: what is refused, how workers are named,
and how their metrics expositions merge into one."""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from recsrv.config import BrokerConfig, Config, ServerConfig
from recsrv.metrics import Metrics
from recsrv.worker_metrics import merge, render
from recsrv.workers import WorkerPlace, describe, port_taken, refusal
from tests.conftest import free_port

AMQP = BrokerConfig(url="amqp://guest:guest@127.0.0.1:5672/")


def test_refusals() -> None:
    memory = Config()
    assert refusal(1, memory) is None
    assert refusal(0, memory) == "--workers must be at least 1, got 0"
    message = refusal(2, memory)
    assert message is not None and "memory://" in message and "--workers 2" in message
    amqp = Config(broker=AMQP)
    assert refusal(4, amqp) is None
    any_port = dataclasses.replace(amqp, server=ServerConfig(port=0))
    assert "server.port" in (refusal(2, any_port) or "")
    assert refusal(1, any_port) is None


def test_each_worker_gets_a_name_of_its_own(tmp_path: Path) -> None:
    place = WorkerPlace(1, 3, tmp_path)
    named = Config(server=ServerConfig(instance="shop"))
    assert place.configure(named).server.instance == "shop-w1"
    # Unnamed: host and pid, which differ from process to process already.
    assert place.configure(Config()) == Config()
    assert place.siblings() == {"0": tmp_path / "worker-0.sock", "2": tmp_path / "worker-2.sock"}


def test_describe_and_port_taken() -> None:
    assert describe(3) == "status 3"
    assert describe(-9) == "signal SIGKILL"
    assert port_taken("127.0.0.1", free_port()) is None
    with socket.socket() as listening:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listening.bind(("127.0.0.1", 0))
        port = listening.getsockname()[1]
        listening.listen()
        # Even a listener with SO_REUSEPORT: a second server would share its port.
        assert port_taken("127.0.0.1", port) == (
            f"cannot listen on 127.0.0.1 port {port}: Address already in use"
        )


def worker_metrics(requests: int, instance: str) -> str:
    metrics = Metrics(instance)
    for _ in range(requests):
        metrics.http.finished("/v1/items/{item_id}", "GET", 200, 0.002)
    metrics.consumer.received["view"] = requests * 10
    return metrics.render().decode()


def test_merge_labels_every_sample_with_its_worker() -> None:
    text = render(merge({"0": worker_metrics(3, "a"), "1": worker_metrics(5, "b")})).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    info = families["recsrv_instance_info"].samples
    assert {(s.labels["worker"], s.labels["instance"]) for s in info} == {("0", "a"), ("1", "b")}
    requests = {
        s.labels["worker"]: (s.labels["route"], s.value)
        for s in families["recsrv_http_requests"].samples
    }
    assert requests == {"0": ("/v1/items/{item_id}", 3.0), "1": ("/v1/items/{item_id}", 5.0)}
    received = {s.labels["worker"]: s.value for s in families["recsrv_events_received"].samples}
    assert received == {"0": 30.0, "1": 50.0}
    durations = families["recsrv_http_request_duration_seconds"]
    counts = {s.labels["worker"]: s.value for s in durations.samples if s.name.endswith("_count")}
    assert counts == {"0": 3.0, "1": 5.0}
    # One family per name: each HELP and TYPE line once.
    assert text.count("# TYPE recsrv_http_requests_total counter") == 1


def test_merge_of_one_worker_is_its_exposition_with_a_label() -> None:
    alone = worker_metrics(2, "a")
    merged = render(merge({"0": alone})).decode()
    assert merged.count("\n") == alone.count("\n")
    relabelled = {f.name: f for f in text_string_to_metric_families(merged)}
    for family in text_string_to_metric_families(alone):
        samples = relabelled[family.name].samples
        assert [s.labels for s in samples] == [{**s.labels, "worker": "0"} for s in family.samples]
