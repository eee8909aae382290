"""Taking a batch from a consumer without waiting for it to fill.

librdkafka's ``consume(n, timeout)`` returns when it holds ``n`` messages or
when the timeout has passed, whichever is first: it waits whenever its queue
runs dry, however many messages it already has. Below full speed every batch
therefore waited out the whole timeout: the gate, asking for 500 records with
a 50 ms timeout at 10,000 records/s, held each record up to 50 ms before
deciding it, and its batches at half speed were "nearly full" because they
were waited for, not because the gate was behind.

:func:`available_batch` takes what has arrived and waits only when nothing
has: a batch is then as large as what came in while the previous one was
being worked on, which grows with the load by itself.
"""

from __future__ import annotations

from confluent_kafka import Consumer, Message


def available_batch(consumer: Consumer, max_messages: int, timeout: float) -> list[Message]:
    """Up to ``max_messages`` that the consumer holds now; if none, the first to arrive within ``timeout`` and those with it.

    Rebalance callbacks run inside any of the calls, as inside one
    ``consume()``: a caller that checks for a rebalance after this returns
    sees it whichever call served it.
    """
    messages = consumer.consume(max_messages, 0)
    if messages or timeout <= 0:
        return messages
    first = consumer.consume(1, timeout)
    if not first or max_messages == 1:
        return first
    return first + consumer.consume(max_messages - 1, 0)
