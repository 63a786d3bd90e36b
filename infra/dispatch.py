"""Dispatch: the SQS queues of ready jobs, one per priority, and their dead-letter queue (per
worker pool), the queue of stream batches the scheduler gave up on, and a delivery-failure
queue."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from aws_cdk import Duration
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from overseer.pools import DEFAULT_POOL

# A message received this many times without being deleted (worker crashed, lease lost
# again and again) goes to the dead-letter queue. Faults with backoff stay well below it.
MAX_RECEIVE_COUNT = 10


@dataclass(frozen=True)
class PoolQueues:
    """One pool's ready jobs, a queue per priority (``overseer.priority``: ``queue`` is the
    normal one), and their one dead-letter queue."""

    queue: sqs.Queue
    dead_letter_queue: sqs.Queue
    high_queue: sqs.Queue
    low_queue: sqs.Queue

    @property
    def dispatch_queues(self) -> tuple[sqs.Queue, sqs.Queue, sqs.Queue]:
        """High, normal and low: every queue the pool's workers take jobs from."""
        return (self.high_queue, self.queue, self.low_queue)


class Dispatch(Construct):
    """The queues. All SQS-managed encryption (SSE-SQS) and TLS only.

    Attributes
    ----------
    queue:
        Ready jobs of normal priority, one message per job. The visibility timeout equals
        the job lease: the worker extends it with every heartbeat (every
        ``lease_seconds / 3``).
    high_queue, low_queue:
        Ready jobs of high and low priority (``overseer.priority``), with the same settings,
        dead-lettering into ``dead_letter_queue`` (construct ids ``QueueHigh``, ``QueueLow``).
    dead_letter_queue:
        Messages received ``MAX_RECEIVE_COUNT`` times; the sweep reports them.
    pool_queues:
        Pool name -> its ``PoolQueues``: the default pool's are the queues above, every
        other pool has its own with the same settings (construct ids ``Queue<Pool>``,
        ``Queue<Pool>High``, ``Queue<Pool>Low``, ``DeadLetterQueue<Pool>``).
    stream_failures:
        The scheduler's on-failure destination: Lambda's record of each stream batch it
        gave up on after its retries (shard and sequence range). The sweep reads those
        records again from the stream and replays them, then deletes the message.
    delivery_failures:
        Trigger events that could not be delivered to the trigger function, or that it
        failed on (rule-target DLQ / on-failure destination), for people to read.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        lease_seconds: int,
        pool_ids: Mapping[str, str] | None = None,
    ) -> None:
        """``pool_ids``: pool name -> the suffix of its queues' construct ids ("" for the
        default pool, whose queues predate pools)."""
        super().__init__(scope, construct_id)
        common = {
            "encryption": sqs.QueueEncryption.SQS_MANAGED,
            "enforce_ssl": True,
        }
        self.pool_queues: dict[str, PoolQueues] = {}
        for pool, suffix in (pool_ids or {DEFAULT_POOL: ""}).items():
            dead_letter_queue = sqs.Queue(
                self, f"DeadLetterQueue{suffix}", retention_period=Duration.days(14), **common
            )
            # The same settings for the three priorities (``overseer.priority``), one DLQ.
            dispatch = {
                "visibility_timeout": Duration.seconds(lease_seconds),
                "retention_period": Duration.days(4),
                "receive_message_wait_time": Duration.seconds(20),
                "dead_letter_queue": sqs.DeadLetterQueue(
                    queue=dead_letter_queue, max_receive_count=MAX_RECEIVE_COUNT
                ),
                **common,
            }
            self.pool_queues[pool] = PoolQueues(
                queue=sqs.Queue(self, f"Queue{suffix}", **dispatch),
                dead_letter_queue=dead_letter_queue,
                high_queue=sqs.Queue(self, f"Queue{suffix}High", **dispatch),
                low_queue=sqs.Queue(self, f"Queue{suffix}Low", **dispatch),
            )
        default = self.pool_queues[DEFAULT_POOL]
        self.queue, self.dead_letter_queue = default.queue, default.dead_letter_queue
        self.high_queue, self.low_queue = default.high_queue, default.low_queue
        self.stream_failures = sqs.Queue(self, "StreamFailures", retention_period=Duration.days(14), **common)
        self.delivery_failures = sqs.Queue(
            self, "DeliveryFailures", retention_period=Duration.days(14), **common
        )
