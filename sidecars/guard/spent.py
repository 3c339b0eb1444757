"""The single-use grants the guard has spent, read back from its own audit log.

The guard spends a single-use grant in memory and says so with one
``grant-used`` audit line. Without reading those lines back, a guard that
restarts (a crash, an engine restart) would admit the grant once more. The
log is the guard's alone: each sidecar writes only an audit directory of its
own, so no other container can add or forge such a line.
"""

from __future__ import annotations

import os
import stat

from bottle.core.proposals import RULE_GRANT_USED, spent_grants

__all__ = ["RULE_GRANT_USED", "read_spent_grants", "spent_grants"]


def read_spent_grants(path: str) -> set[int]:
    """``spent_grants`` of the audit log at ``path``; empty when there is no log yet.

    Raises ``OSError`` when the log cannot be read and ``ValueError`` when
    ``path`` is not a regular file (a FIFO would block the guard's start; a
    symlink could point at anything): the caller then cannot know which
    grants are spent and must fail closed.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return set()
    except OSError:
        if os.path.islink(path):
            raise ValueError(f"the audit log {path} is a symlink") from None
        raise
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise ValueError(f"the audit log {path} is not a regular file")
        return spent_grants(fh)
