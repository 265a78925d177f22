"""The root of every exception this package raises on purpose.

Callers catch ``WorkerError`` to tell our failures (which carry a message meant for an operator)
from programming errors. Each layer defines its own subclasses next to the code that raises them.
"""


class WorkerError(Exception):
    """Base class of all errors raised by protection-worker."""


class ConfigError(WorkerError):
    """Bad configuration or command-line input: the process exits with status 2."""
