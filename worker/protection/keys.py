"""COMPAT (issue 18): the key layout moved to ``worker.keys`` (below protection and daemon); this
re-export keeps the files listed in MIGRATION.md importing it until they move."""

from worker.keys import ID_PATTERN, Keys, valid_id

__all__ = ["ID_PATTERN", "Keys", "valid_id"]
