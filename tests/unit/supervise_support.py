"""Test support for the supervise tests: a stand-in for the guard's policy confirmation."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from bottle.adapters.local import LocalStateStore
from bottle.adapters.local.proposal_desk import GRANTS_PATH, POLICY_FILE
from bottle.core import proposals as P
from bottle.core.state import audit_log_path


class FakeGuard:
    """Stands in for the guard's policy watch: on every new policy/grants file, a policy-loaded line."""

    def __init__(self, store: LocalStateStore, identity: str) -> None:
        self.policy = Path(store.host_path(identity, POLICY_FILE))
        self.grants = Path(store.host_path(identity, GRANTS_PATH))
        self.log = Path(store.host_path(identity, audit_log_path("guard")))
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @staticmethod
    def _key(path: Path) -> tuple[int, int] | None:
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns

    def _run(self) -> None:
        seen = None
        while not self.stop.is_set():
            key = (self._key(self.policy), self._key(self.grants))
            if key != seen and key[0] is not None:
                seen = key
                grants = self.grants.read_bytes() if self.grants.exists() else None
                reason = P.policy_loaded_reason(P.digest(self.policy.read_bytes()), P.digest(grants))
                with self.log.open("a") as fh:
                    fh.write(json.dumps({"event": "policy", "rule": "policy-loaded", "reason": reason, "role": "guard"}) + "\n")
            time.sleep(0.005)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
