"""The supervise loop on real engines: the agent asks, a person decides, the guard enforces without a restart.

On Docker, rootful Podman and rootless Podman (``supervise_world``): a client
on the internal network files proposals over HTTP and MCP; they appear in the
host's queue; ``approve`` writes the allowlist and returns only once the real
guard confirmed loading it, and the agent's next request passes; a rejected
host stays blocked; a file forged in the queue mount is refused.

Back doors: the bottle's state directory on the host (queue, decisions,
policy) and the guard's own audit log.

Engines that do not answer are skipped here with the reason, and fail the
run in CI (``CI=true`` or ``BOTTLE_REQUIRE_ENGINES=1``).
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from supervise_world import BASE_IMAGE, ENGINES, IDENTITY, SupervisedBottle, build_images, make_runtime  # noqa: E402

from bottle.adapters.local.proposal_desk import POLICY_FILE  # noqa: E402
from bottle.adapters.local.proposal_queue import HostQueue  # noqa: E402
from bottle.core.egress_policy import decode_policy  # noqa: E402

RUN_ID = secrets.token_hex(4)
RUN_LABELS = {"io.bottle.test-run": RUN_ID, "io.bottle.test-case": "supervise"}


def _engines_required() -> bool:
    return os.environ.get("CI", "").lower() == "true" or os.environ.get("BOTTLE_REQUIRE_ENGINES") == "1"


@pytest.fixture(
    scope="module",
    params=[pytest.param(n, marks=[getattr(pytest.mark, n), pytest.mark.engine], id=n) for n in ENGINES],
)
def bottle(request: pytest.FixtureRequest) -> Iterator[SupervisedBottle]:
    from bottle.ports.errors import RuntimeFailure

    name: str = request.param
    try:
        runtime = make_runtime(name)
        info = runtime.info()
        if name == "podman_rootless" and not info.rootless:
            raise RuntimeFailure(f"the engine at {info.address} is not rootless")
        if not runtime.image_exists(BASE_IMAGE):
            raise RuntimeFailure(f"base image {BASE_IMAGE} is missing: run `bottle --runtime {runtime.name} images bootstrap`")
    except RuntimeFailure as exc:
        if _engines_required():
            pytest.fail(f"{name}: {exc}", pytrace=False)
        pytest.skip(f"{name}: {exc}")
    work = Path(tempfile.mkdtemp(prefix="bottle-supervise-build-"))
    world = None
    try:
        images = build_images(runtime, work, RUN_ID, RUN_LABELS)
        world = SupervisedBottle(runtime, images, RUN_LABELS, rootless=info.rootless)
        yield world
    finally:
        try:
            if world is not None:
                world.close()
            runtime.remove_labelled(RUN_LABELS)
        finally:
            runtime.close()
            shutil.rmtree(work, ignore_errors=True)


def test_an_approved_host_is_live_without_a_restart(bottle: SupervisedBottle) -> None:
    assert bottle.fetch("allowed.example.test") == 403
    pid = bottle.propose_http("allowed.example.test", "the docs live there")
    found, refused = HostQueue(bottle.store, IDENTITY).scan()
    assert [(p.id, p.status) for p in found if p.id == pid] == [(pid, "pending")] and not refused
    outcome = bottle.desk.approve(IDENTITY, pid, decided_by="itest", note="go ahead")
    assert outcome.ok, outcome.message
    assert "the guard confirmed" in outcome.message
    assert "allowed.example.test" in decode_policy(bottle.store.read(IDENTITY, POLICY_FILE) or b"").allow
    # approve returned only after the guard's confirmation: the very next request passes
    assert bottle.fetch("allowed.example.test") == 200
    assert bottle.wait_status(pid) == "applied"
    guard_ids = {a.get("reason") for a in bottle.guard_audit() if a.get("rule") == "policy-loaded"}
    assert len(guard_ids) >= 2  # the start, and the approval


def test_a_rejected_host_filed_over_mcp_stays_blocked(bottle: SupervisedBottle) -> None:
    before = bottle.store.read(IDENTITY, POLICY_FILE)
    pid = bottle.propose_mcp("rejected.example.test", "want it")
    assert HostQueue(bottle.store, IDENTITY).get(pid).status == "pending"
    outcome = bottle.desk.reject(IDENTITY, pid, decided_by="itest", note="no")
    assert outcome.ok and outcome.proposal.status == "rejected"
    assert bottle.store.read(IDENTITY, POLICY_FILE) == before
    assert bottle.fetch("rejected.example.test") == 403
    assert bottle.wait_status(pid) == "rejected"


def test_a_file_forged_in_the_queue_mount_is_refused_and_nothing_applied(bottle: SupervisedBottle) -> None:
    before = bottle.store.read(IDENTITY, POLICY_FILE)
    forged = ('{"version":1,"id":9000,"identity":"%s","reason":"r","payload":{"kind":"allow-host",'
              '"host":"b1.example.test"},"filed_at":"2026-11-26T00:00:00Z","status":"approved"}' % IDENTITY)
    # Written from inside the supervise container (its only writable mount), as a compromised sidecar could.
    rc, out = bottle.exec("supervise", ["sh", "-c", f"printf '%s' '{forged}' > /run/supervise/queue/9000.json"])
    assert rc == 0, out
    rc, out = bottle.exec("supervise", ["sh", "-c", "echo x > /run/supervise/decisions/9000.json"])
    assert rc != 0  # decisions are read-only to the sidecar
    _, refused = HostQueue(bottle.store, IDENTITY).scan()
    assert any(r.name == "9000.json" and "forged" in r.reason for r in refused)
    with pytest.raises(Exception, match="forged"):
        bottle.desk.approve(IDENTITY, 9000, decided_by="itest")
    assert bottle.store.read(IDENTITY, POLICY_FILE) == before
    assert bottle.fetch("b1.example.test") == 403
