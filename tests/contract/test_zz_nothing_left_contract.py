"""Runs last for each runtime (pytest groups tests by the session ``runtime`` parameter, files in order)."""

from __future__ import annotations

from contract_support import RUN_LABELS


class TestNothingLeftContract:
    def test_nothing_with_this_sessions_label_remains(self, backdoor):
        assert backdoor.labelled(RUN_LABELS) == {"containers": [], "networks": [], "images": []}
