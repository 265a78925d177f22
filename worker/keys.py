"""Keys is the key layout of ``shared/spec/protection-state.md`` under one namespace: the
protection inputs and outputs, and the daemon's own keys (election, lock, controls, stamp).

Every key the worker touches is built here, so the promise "every request stays under ``{ns}/``"
(an etcd role granted ``readwrite --prefix {ns}/`` is all it needs) is checked in one place. It
depends on nothing: protection, control, daemon, ops and commands all import it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,128}")


def valid_id(cluster_id: str) -> bool:
    return ID_PATTERN.fullmatch(cluster_id) is not None


@dataclass(frozen=True)
class Keys:
    namespace: str = "/protection-worker"

    def __post_init__(self) -> None:
        object.__setattr__(self, "namespace", self.namespace.rstrip("/"))

    @property
    def root(self) -> str:
        return self.namespace + "/"

    @property
    def clusters(self) -> str:
        return f"{self.namespace}/clusters/"

    @property
    def dr(self) -> str:
        return f"{self.namespace}/dr/"

    @property
    def protection(self) -> str:
        return f"{self.namespace}/protection/"

    @property
    def election(self) -> str:
        """The Election prefix (Go's layout adds "/" itself: keys are ``{ns}/election/<lease hex>``)."""
        return f"{self.namespace}/election"

    @property
    def lock(self) -> str:
        """The reconcile Mutex prefix (keys ``{ns}/reconcile-lock/<lease hex>``)."""
        return f"{self.namespace}/reconcile-lock"

    @property
    def control(self) -> str:
        return f"{self.namespace}/control/"

    @property
    def paused(self) -> str:
        """The maintenance pause key (``protection-worker pause``); every fenced write compares its absence."""
        return self.control + "paused"

    @property
    def switchover(self) -> str:
        """The planned switchover request (``protection-worker switchover``), bound to a lease."""
        return self.control + "switchover"

    @property
    def stamp(self) -> str:
        """Audit evidence: every fenced write transaction puts the writer's term and lease here, so
        each protection put *and delete* carries, in its own revision, who made it."""
        return f"{self.namespace}/write-stamp"

    def cluster(self, cluster_id: str) -> str:
        return self.clusters + cluster_id

    def dr_key(self, cluster_id: str) -> str:
        return self.dr + cluster_id

    def protection_key(self, cluster_id: str) -> str:
        return self.protection + cluster_id

    @staticmethod
    def id_of(key: str | bytes, prefix: str) -> str:
        text = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
        return text[len(prefix):]
