"""Alert notifications, delivered from the event log at least once.

The `Notifier` follows the log with projections of its own and a durable
checkpoint, turns the notices they announce (alert raised, acknowledged,
resolved, rate limit high) into outbox rows, one per wanted notice and channel,
keyed by an idempotency key that is stable across retries and replays, and
delivers them with a task per channel: retries with back-off and jitter, a
failing channel slowing no other. `messages` says what a notification holds and
how each kind of channel wants it; `delivery` sends one; `outbox` is its SQL.
"""

from cryptomon.notify.delivery import Outcome, deliver
from cryptomon.notify.messages import Notification, trial_notification
from cryptomon.notify.notifier import ChannelStats, Notifier

__all__ = ["ChannelStats", "Notification", "Notifier", "Outcome", "deliver", "trial_notification"]
