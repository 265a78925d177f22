"""WriteStamp: the audit evidence every fenced write transaction puts at ``Keys.stamp``.

``{"term": T, "lease": "<hex>", "instance_id": ID or null}``, compact JSON. ``dump`` is what the
writer puts; ``parse`` is total (``worker.untrusted``): any stored value gives a ``WriteStamp`` or
``None`` (not a stamp the worker wrote: the audit counts the write unattributed), never an
exception. The writer, the audit and the drill's measurements share this one definition.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from worker.untrusted import UntrustedValueError, loads_object

#: a stamp is a few dozen bytes; anything much larger is not one of ours
MAX_STAMP_BYTES = 4096


@dataclass(frozen=True)
class WriteStamp:
    term: int
    lease: int
    instance_id: str | None = None

    def dump(self) -> str:
        return json.dumps({"term": self.term, "lease": f"{self.lease:x}", "instance_id": self.instance_id},
                          separators=(",", ":"))

    @classmethod
    def parse(cls, raw: bytes | str | None) -> WriteStamp | None:
        """The stamp in a stored value, or None when it is not one (any value, never raises)."""
        if raw is None:
            return None
        try:
            data = loads_object(raw, "write stamp", max_bytes=MAX_STAMP_BYTES)
        except UntrustedValueError:
            return None
        term, lease, instance_id = data.get("term"), data.get("lease"), data.get("instance_id")
        if not isinstance(term, int) or isinstance(term, bool) or term < 0:
            return None
        if not isinstance(lease, str) or not 0 < len(lease) <= 16:
            return None
        try:
            lease_id = int(lease, 16)
        except ValueError:
            return None
        if instance_id is not None and not (isinstance(instance_id, str) and len(instance_id) <= 256):
            return None
        return cls(term, lease_id, instance_id)

    def to_json(self) -> dict[str, object]:
        """The stamp as the audit reports it (lease in hex, as stored)."""
        return {"term": self.term, "lease": f"{self.lease:x}", "instance_id": self.instance_id}
