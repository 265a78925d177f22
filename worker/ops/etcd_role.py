"""The least-privilege etcd user for the worker: one role, readwrite on ``{ns}/`` and nothing else.

Everything the worker does stays under ``{ns}/`` (its reads of the revision included), so this role
is all it needs, on every etcd 3.5 release tested (3.5.1, 3.5.16, 3.5.30). ``RELEASE_NOTES`` says
why that still holds from etcd 3.5.28, which tightened auth (CVE-2026-33413, CVE-2026-33343).
``print_commands`` gives the ``etcdctl``
lines an etcd admin runs once; ``apply`` does the same through the Auth API, idempotently (an
existing user, role or grant is left as it is, so it can run on every deploy).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any, Callable

from worker.etcd.client import EtcdClient
from worker.etcd.errors import EtcdError, EtcdRequestError


#: what etcd 3.5.28 and later require beyond readwrite on ``{ns}/``, and why the role still suffices
RELEASE_NOTES = (
    "etcd 3.5.28+: LeaseGrant and LeaseRevoke need an authenticated user: this user (no extra role).",
    "etcd 3.5.28+: LeaseKeepAlive needs put permission on every key attached to the lease: the worker "
    "attaches only its election and lock keys, both under {prefix}, so readwrite there covers it.",
    "etcd 3.5.28-3.5.31: Maintenance.Status needs the root role (3.5.28: MemberList too, until 3.5.29): "
    "the worker never calls them (it reads the server version from GET /version), so no admin role.",
)


def release_notes(plan: RolePlan) -> list[str]:
    """release_notes returns ``RELEASE_NOTES`` for ``plan``'s prefix: what and why, one line each."""
    return [note.format(prefix=plan.prefix) for note in RELEASE_NOTES]


@dataclass(frozen=True)
class RolePlan:
    namespace: str
    user: str = "protection-worker"
    role: str = "protection-worker"

    @property
    def prefix(self) -> str:
        return self.namespace.rstrip("/") + "/"


def print_commands(plan: RolePlan, etcdctl_flags: str = "") -> list[str]:
    flags = f" {etcdctl_flags}" if etcdctl_flags else ""
    q = shlex.quote
    return [
        f"etcdctl{flags} user add {q(plan.user)} --interactive  # prompts for the new user's password",
        f"etcdctl{flags} role add {q(plan.role)}",
        f"etcdctl{flags} role grant-permission {q(plan.role)} --prefix=true readwrite {q(plan.prefix)}",
        f"etcdctl{flags} user grant-role {q(plan.user)} {q(plan.role)}",
    ]


def _tolerate_exists(call: Callable[[], Any], say: Callable[[str], None], what: str) -> None:
    try:
        call()
        say(f"{what}: done")
    except EtcdRequestError as err:
        if "already exists" in str(err) or "already granted" in str(err):
            say(f"{what}: already there")
            return
        raise


def apply(client: EtcdClient, plan: RolePlan, password: str | None, say: Callable[[str], None] = print) -> None:
    """Create the user and role and grant the prefix, through the Auth API (admin credentials)."""
    if plan.user in client.user_list():
        say(f"user {plan.user}: already there (password unchanged)")
    else:
        if not password:
            raise EtcdError(f"user {plan.user} does not exist: give its password with --password-file")
        client.user_add(plan.user, password)
        say(f"user {plan.user}: created")
    _tolerate_exists(lambda: client.role_add(plan.role), say, f"role {plan.role}")
    client.role_grant_prefix(plan.role, plan.prefix)
    say(f"role {plan.role}: readwrite on prefix {plan.prefix}")
    client.user_grant_role(plan.user, plan.role)
    say(f"user {plan.user}: has role {plan.role}")
