"""fairqueue: a multi-tenant, fair, durable background-job system with a Rust core.

The public API is re-exported here; ``fairqueue._core`` is private.
"""

from __future__ import annotations

from fairqueue._core import Grant, Release
from fairqueue.alerts import AlertEvent
from fairqueue.app import FairQueue, OrgView
from fairqueue.conservation import ResourceMonitor, Thresholds
from fairqueue.cron import CronSchedule
from fairqueue.dispatcher import Dispatcher
from fairqueue.enqueue import FutureFunction
from fairqueue.errors import (
    DailyLimitExceeded,
    DuplicateRequest,
    DuplicateSignature,
    FairQueueError,
    FlexQueueFull,
    HandlerNotFound,
    InvalidArgument,
    JobFailed,
    LimitExceeded,
    MalformedRecord,
    NotSerializable,
    SchemaVersionError,
    StorageCorrupt,
    StorageError,
    StorageFull,
    StorageUnavailable,
    UnknownKind,
    UnknownLease,
    UnknownPolicy,
    UnknownRequest,
)
from fairqueue.jobs import (
    AsyncOptions,
    Batchable,
    Context,
    Finalizer,
    FinalizerResult,
    JobHandle,
    Queueable,
    Retry,
    current_context,
)
from fairqueue.kinds import KINDS, POLICIES
from fairqueue.limits import Limits, RateLimit
from fairqueue.observe import Explanation, Reason
from fairqueue.processor import AsyncProcessor, Query
from fairqueue.records import BatchErrorEvent, JobRecord, JobStatus, TriggerRecord, TriggerState
from fairqueue.retention import Retention
from fairqueue.retry import DEFAULT_RETRY, NO_RETRY, RetryPolicy
from fairqueue.runtime import Worker
from fairqueue.storage import DailyUsage

__all__ = [
    "FairQueue",
    "JobHandle",
    "OrgView",
    "Limits",
    "RateLimit",
    "Retention",
    "Queueable",
    "Batchable",
    "BatchErrorEvent",
    "AsyncProcessor",
    "Query",
    "Explanation",
    "Reason",
    "AlertEvent",
    "Context",
    "AsyncOptions",
    "Finalizer",
    "FinalizerResult",
    "FutureFunction",
    "Retry",
    "RetryPolicy",
    "DEFAULT_RETRY",
    "NO_RETRY",
    "JobFailed",
    "current_context",
    "JobRecord",
    "JobStatus",
    "DailyUsage",
    "TriggerRecord",
    "TriggerState",
    "CronSchedule",
    "Worker",
    "ResourceMonitor",
    "Thresholds",
    "Dispatcher",
    "Grant",
    "Release",
    "FairQueueError",
    "InvalidArgument",
    "UnknownKind",
    "UnknownPolicy",
    "DuplicateRequest",
    "UnknownRequest",
    "UnknownLease",
    "DuplicateSignature",
    "LimitExceeded",
    "DailyLimitExceeded",
    "FlexQueueFull",
    "NotSerializable",
    "HandlerNotFound",
    "StorageError",
    "StorageFull",
    "StorageUnavailable",
    "StorageCorrupt",
    "SchemaVersionError",
    "MalformedRecord",
    "KINDS",
    "POLICIES",
]

