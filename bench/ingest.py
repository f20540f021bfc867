"""Ingest throughput from a real RabbitMQ stream: recsrv against a bare consumer.

Publishes a synthetic stream once, then reads it from the start, several times over:
- bare: an aio-pika consumer that only acks (the limit design P1 names);
- bare aiormq: the same one level down, on aio-pika's transport (what recsrv's
  adapter uses; printed for reference, it is the tighter limit);
- recsrv, 1 event per message: the real consumer (decode, validate, apply);
- recsrv, 100 events per message.
Prints medians and the ratio recsrv / bare measured in the same run (design P1, P2).

    python bench/ingest.py [--messages 20000] [--batched 1000] [--repeat 5] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import time
import uuid
from collections.abc import Sequence

import aio_pika
import aiormq
import orjson
from services import AMQP_URL, run_benchmark

from recsrv.broker import Delivery
from recsrv.broker.amqp import AmqpEventLog
from recsrv.config import BrokerConfig, ModelConfig, SessionsConfig
from recsrv.consumer import Consumer
from recsrv.events import Event
from recsrv.metrics import Metrics
from recsrv.model import Model

WINDOW = 500  # publishes in flight at once (aio-pika confirms one by one otherwise)


def synthetic_events(count: int, seed: int = 7) -> list[dict[str, object]]:
    """Sessions of ~10 views over 5,000 items, with some carts."""
    events: list[dict[str, object]] = []
    state = seed
    for n in range(count):
        state = (state * 1103515245 + 12345) % 2**31
        kind = "add_to_cart" if state % 10 == 0 else "view"
        events.append(
            {
                "type": kind,
                "session_id": f"s{n // 10}",
                "item_id": f"i{state % 5000}",
                "ts": 1_700_000_000 + n,
            }
        )
    return events


async def publish(config: BrokerConfig, bodies: list[bytes]) -> None:
    log = AmqpEventLog(config)
    await log.start()
    for start in range(0, len(bodies), WINDOW):
        await asyncio.gather(*(log.publish(b, "view") for b in bodies[start : start + WINDOW]))
    await log.close()


async def bare_consume(config: BrokerConfig, messages: int) -> float:
    connection = await aio_pika.connect(AMQP_URL)
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=config.prefetch)
    queue = await channel.get_queue(config.queue)
    done = asyncio.get_running_loop().create_future()
    seen = 0

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        nonlocal seen
        seen += 1
        if seen % config.ack_every == 0 or seen == messages:
            await message.ack(multiple=True)
        if seen == messages and not done.done():
            done.set_result(None)

    started = time.perf_counter()
    await queue.consume(on_message, arguments={"x-stream-offset": "first"})
    await done
    elapsed = time.perf_counter() - started
    await connection.close()
    return elapsed


async def bare_raw_consume(config: BrokerConfig, messages: int) -> float:
    """The bare consumer on aiormq, beneath aio-pika: no IncomingMessage, no extra task."""
    connection = await aio_pika.connect(AMQP_URL)
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=config.prefetch)
    raw = await channel.get_underlay_channel()
    done = asyncio.get_running_loop().create_future()
    seen = 0

    async def on_message(message: aiormq.abc.DeliveredMessage) -> None:
        nonlocal seen
        seen += 1
        if seen % config.ack_every == 0 or seen == messages:
            assert message.delivery_tag is not None
            await raw.basic_ack(message.delivery_tag, multiple=True)
        if seen == messages and not done.done():
            done.set_result(None)

    started = time.perf_counter()
    await raw.basic_consume(config.queue, on_message, arguments={"x-stream-offset": "first"})
    await done
    elapsed = time.perf_counter() - started
    await connection.close()
    return elapsed


async def recsrv_consume(config: BrokerConfig, last_offset: int) -> tuple[float, int]:
    log = AmqpEventLog(config)
    await log.start()
    model = Model(ModelConfig(), SessionsConfig(max_sessions=1_000_000))
    caught_up = asyncio.Event()

    def on_applied(delivery: Delivery, events: Sequence[Event]) -> None:
        if delivery.offset >= last_offset:
            caught_up.set()

    consumer = Consumer(log, model, config, Metrics(), on_applied=on_applied)
    started = time.perf_counter()
    task = asyncio.create_task(consumer.run())
    await caught_up.wait()
    elapsed = time.perf_counter() - started
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)  # its channel closes cleanly
    await log.close()
    return elapsed, model.events


async def run(args: argparse.Namespace) -> dict[str, object]:
    run_id = uuid.uuid4().hex[:8]
    single = BrokerConfig(
        url=AMQP_URL,
        exchange=f"bench.{run_id}.1",
        queue=f"bench.{run_id}.1.q",
        invalid_exchange=f"bench.{run_id}.inv",
        max_age="1h",
    )
    batched = BrokerConfig(
        url=AMQP_URL,
        exchange=f"bench.{run_id}.100",
        queue=f"bench.{run_id}.100.q",
        invalid_exchange=f"bench.{run_id}.inv",
        max_age="1h",
    )
    events = synthetic_events(max(args.messages, args.batched * 100))
    print(f"publishing {args.messages} one-event messages and {args.batched} of 100 events …")
    await publish(single, [orjson.dumps(e) for e in events[: args.messages]])
    await publish(
        batched, [orjson.dumps(events[i : i + 100]) for i in range(0, args.batched * 100, 100)]
    )
    bare, raw, ours, ours_batched = [], [], [], []
    for _ in range(args.repeat):
        bare.append(args.messages / await bare_consume(single, args.messages))
        raw.append(args.messages / await bare_raw_consume(single, args.messages))
        elapsed, applied = await recsrv_consume(single, args.messages - 1)
        assert applied == args.messages, applied
        ours.append(args.messages / elapsed)
        elapsed, applied = await recsrv_consume(batched, args.batched - 1)
        assert applied == args.batched * 100, applied
        ours_batched.append(applied / elapsed)
    ratios = [o / b for o, b in zip(ours, bare, strict=True)]
    raw_ratios = [o / b for o, b in zip(ours, raw, strict=True)]
    result = {
        "runs": args.repeat,
        "messages": args.messages,
        "batched_messages": args.batched,
        "bare_msg_s": statistics.median(bare),
        "bare_aiormq_msg_s": statistics.median(raw),
        "p1_events_s": statistics.median(ours),
        "p1_ratio": statistics.median(ratios),
        "p1_ratio_runs": ratios,
        "p1_ratio_aiormq": statistics.median(raw_ratios),
        "p2_events_s": statistics.median(ours_batched),
        "p2_runs": ours_batched,
    }
    print(f"runs: {args.repeat}, cores: {os.cpu_count()}")
    print(f"bare aio-pika consumer, 1 event/message : median {result['bare_msg_s']:9,.0f} msg/s")
    print(
        f"bare aiormq consumer,   1 event/message : median "
        f"{result['bare_aiormq_msg_s']:9,.0f} msg/s (reference: the transport beneath aio-pika)"
    )
    print(
        f"recsrv consumer,        1 event/message : median {result['p1_events_s']:9,.0f} "
        f"events/s  ratio to bare {result['p1_ratio']:.2f} (P1 target >= 0.8; runs "
        f"{', '.join(f'{r:.2f}' for r in ratios)}); to bare aiormq {result['p1_ratio_aiormq']:.2f}"
    )
    print(
        f"recsrv consumer,      100 events/message: median "
        f"{result['p2_events_s']:9,.0f} events/s (P2 target >= 50,000)"
    )
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        for config in (single, batched):
            await channel.queue_delete(config.queue)
            await channel.exchange_delete(config.exchange)
        await channel.queue_delete(single.invalid_exchange)
        await channel.exchange_delete(single.invalid_exchange)
    return result


def main() -> None:
    # aiormq logs "Got frame for closed channel" (an error, though harmless) when a
    # stream consumer's channel closes with deliveries in flight, as every run here
    # does on purpose; that line alone is dropped.
    logging.getLogger("aiormq.connection").addFilter(
        lambda record: not record.getMessage().startswith("Got frame for closed channel")
    )
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--batched", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=5)
    run_benchmark(parser, run)


if __name__ == "__main__":
    main()
