"""protection-worker: a leader-elected worker on etcd that keeps disaster-recovery protection state correct."""

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("protection-worker")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
