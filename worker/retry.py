"""COMPAT (issue 18): ``worker.retry`` moved to ``worker.etcd.retry``; delete once
worker/daemon/leader.py imports ``worker.etcd.retry.Retry`` (see MIGRATION.md)."""

from worker.etcd.retry import DEFAULT, Retry

RetryPolicy = Retry

__all__ = ["DEFAULT", "Retry", "RetryPolicy"]
