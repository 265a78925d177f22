"""The lease file: where a running instance records the lease it holds, for ``protection-worker release``.

Under systemd the file lives in ``$RUNTIME_DIRECTORY`` (``RuntimeDirectory=``, kept across a
restart with ``RuntimeDirectoryPreserve=restart``), which only this unit sees; ``ExecStopPost=``
then revokes exactly the lease the dead process held. Without ``$RUNTIME_DIRECTORY`` nothing is
recorded. (Interface stub: filled in by the release work, issue 12.)
"""

from __future__ import annotations


def record(lease: int, instance_id: str) -> None:
    """Record ``lease`` as held by this process (replacing any earlier record of this process)."""


def clear() -> None:
    """Forget the record after a clean stop (the lease was revoked already)."""
