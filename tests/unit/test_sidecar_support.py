"""What the egress sidecars do around mitmproxy: files, environment, startup checks, build contexts."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest

from bottle.adapters.tls import mint_ca
from bottle.ports.runtime import ProgressEvent
from bottle.sidecars import _wheels
from bottle.sidecars._shared import (
    AuditLog,
    StartupError,
    WatchedFile,
    load_tokens,
    write_ca_bundle,
    write_mitmproxy_confdir,
)
from bottle.sidecars.egress_proxy import entrypoint as proxy_entry
from bottle.sidecars.guard import entrypoint as guard_entry
from bottle.sidecars.guard.bodies import decode_body

NOW = datetime.now(timezone.utc)


# -- files -----------------------------------------------------------------------


def test_watched_file_reloads_on_change_and_reports_errors(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_text('{"n": 1}')
    watched = WatchedFile(str(path), lambda b: json.loads(b)["n"])
    assert watched.get() == (1, None)
    assert watched.get() == (1, None) and watched.loads == 1  # unchanged: not read again
    (tmp_path / "new").write_text('{"n": 2, "pad": 0}')
    os.replace(tmp_path / "new", path)
    assert watched.get() == (2, None)
    path.write_text("{broken")
    value, error = watched.get()
    assert value is None and error and str(path) in error
    path.unlink()
    value, error = watched.get()
    assert value is None and "cannot read" in (error or "")


def test_audit_log_appends_whole_lines(tmp_path: Path) -> None:
    log = AuditLog(str(tmp_path / "audit" / "guard.jsonl"))
    assert log.write(b'{"a":1}\n') and log.write(b'{"a":2}\n')
    log.close()
    assert (tmp_path / "audit" / "guard.jsonl").read_text() == '{"a":1}\n{"a":2}\n'


def test_tokens_come_from_env_and_an_optional_file(tmp_path: Path) -> None:
    env = {"BOTTLE_TOKEN_0": "a" * 20, "BOTTLE_TOKEN_1": "", "OTHER": "x", "BOTTLE_TOKEN_X": "no"}
    assert load_tokens(env) == {"BOTTLE_TOKEN_0": "a" * 20}
    f = tmp_path / "secrets.json"
    f.write_text(json.dumps({"BOTTLE_TOKEN_2": "b" * 20}))
    assert load_tokens(env, str(f)) == {"BOTTLE_TOKEN_0": "a" * 20, "BOTTLE_TOKEN_2": "b" * 20}
    f.write_text(json.dumps({"EVIL": "zzzz-secret-value"}))
    with pytest.raises(ValueError) as err:
        load_tokens(env, str(f))
    assert "zzzz" not in str(err.value)
    with pytest.raises(ValueError, match="cannot read"):
        load_tokens(env, str(tmp_path / "missing.json"))


def test_mitmproxy_confdir_gets_key_then_cert_0600(tmp_path: Path) -> None:
    ca = mint_ca("t", now=NOW)
    (tmp_path / "k").write_bytes(ca.key_pem)
    (tmp_path / "c").write_bytes(ca.cert_pem)
    confdir = write_mitmproxy_confdir(str(tmp_path / "conf"), str(tmp_path / "k"), str(tmp_path / "c"))
    pem = Path(confdir, "mitmproxy-ca.pem")
    assert pem.read_bytes() == ca.mitmproxy_pem()
    assert pem.stat().st_mode & 0o777 == 0o600
    with pytest.raises(ValueError, match="no PEM private key"):
        write_mitmproxy_confdir(str(tmp_path / "conf"), str(tmp_path / "c"), str(tmp_path / "c"))


def test_ca_bundle_concatenates_and_refuses_non_certificates(tmp_path: Path) -> None:
    a, b = mint_ca("a", now=NOW), mint_ca("b", now=NOW)
    (tmp_path / "a").write_bytes(a.cert_pem)
    (tmp_path / "b").write_bytes(b.cert_pem)
    out = write_ca_bundle(str(tmp_path / "out"), str(tmp_path / "a"), None, str(tmp_path / "b"))
    assert Path(out).read_bytes().count(b"BEGIN CERTIFICATE") == 2
    (tmp_path / "junk").write_text("hello")
    with pytest.raises(ValueError, match="no PEM certificate"):
        write_ca_bundle(str(tmp_path / "out"), str(tmp_path / "junk"))


def test_decode_body_undoes_gzip_and_deflate_within_a_limit() -> None:
    import gzip
    import zlib

    assert decode_body(gzip.compress(b"hello"), "gzip", 100) == b"hello"
    assert decode_body(zlib.compress(b"hello"), "deflate", 100) == b"hello"
    raw_deflate = zlib.compressobj(wbits=-15)
    assert decode_body(raw_deflate.compress(b"hi") + raw_deflate.flush(), "deflate", 100) == b"hi"
    assert decode_body(b"plain", None, 100) == b"plain"
    with pytest.raises(ValueError, match="expands beyond"):
        decode_body(gzip.compress(b"\0" * 1000), "gzip", 100)
    with pytest.raises(ValueError, match="cannot be scanned"):
        decode_body(b"x", "br", 100)
    with pytest.raises(ValueError, match="corrupt"):
        decode_body(b"not gzip", "gzip", 100)


# -- entrypoints ----------------------------------------------------------------------


def sidecar_env(tmp_path: Path, role: str) -> dict[str, str]:
    ca = mint_ca(role, now=NOW)
    (tmp_path / f"{role}.key").write_bytes(ca.key_pem)
    (tmp_path / f"{role}.crt").write_bytes(ca.cert_pem)
    return {
        "BOTTLE_ROLE": role,
        "BOTTLE_IDENTITY": "impl-abcde",
        "BOTTLE_CA_KEY": str(tmp_path / f"{role}.key"),
        "BOTTLE_CA_CERT": str(tmp_path / f"{role}.crt"),
        "BOTTLE_RUNTIME_DIR": str(tmp_path / f"run-{role}"),
        "BOTTLE_POLICY_FILE": str(tmp_path / "policy" / "egress.json"),
        "BOTTLE_AUDIT_LOG": str(tmp_path / "audit" / f"{role}.jsonl"),
    }


def test_guard_entrypoint_trusts_system_cas_plus_the_extra_bundle(tmp_path: Path) -> None:
    env = sidecar_env(tmp_path, "guard")
    extra = mint_ca("corporate proxy", now=NOW)
    (tmp_path / "extra.pem").write_bytes(extra.cert_pem)
    env["BOTTLE_EXTRA_CA_FILE"] = str(tmp_path / "extra.pem")
    args = guard_entry.prepare(env)
    trust = args[args.index("--set", args.index("regular")) + 1].split("=", 1)[1]
    bundle = Path(trust).read_bytes()
    assert extra.cert_pem.strip() in bundle
    assert bundle.count(b"BEGIN CERTIFICATE") > 10  # the system store came along
    assert f"bottle_policy={env['BOTTLE_POLICY_FILE']}" in args
    assert "--mode" in args and "regular" in args
    assert Path(env["BOTTLE_RUNTIME_DIR"], "mitmproxy", "mitmproxy-ca.pem").exists()


def test_guard_refuses_to_start_without_its_ca(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env = sidecar_env(tmp_path, "guard")
    env["BOTTLE_CA_KEY"] = str(tmp_path / "missing.key")
    assert guard_entry.main([], env) == 2
    assert "cannot start" in capsys.readouterr().err


def test_egress_proxy_runs_upstream_through_the_guard_trusting_only_its_ca(tmp_path: Path) -> None:
    env = sidecar_env(tmp_path, "egress-proxy")
    guard_ca = mint_ca("guard", now=NOW)
    (tmp_path / "guard.crt").write_bytes(guard_ca.cert_pem)
    env.update({"HTTPS_PROXY": "http://guard:8080", "BOTTLE_UPSTREAM_CA": str(tmp_path / "guard.crt")})
    args = proxy_entry.prepare(env)
    assert args[args.index("--mode") + 1] == "upstream:http://guard:8080"
    trust = next(a for a in args if a.startswith("ssl_verify_upstream_trusted_ca=")).split("=", 1)[1]
    assert Path(trust).read_bytes().strip() == guard_ca.cert_pem.strip()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"HTTPS_PROXY": ""}, "no upstream proxy"),
        ({"HTTPS_PROXY": "https://guard:8080"}, "must look like http://host:port"),
        ({"BOTTLE_UPSTREAM_CA": "/no/such/file"}, "cannot read"),
        ({"BOTTLE_LISTEN_PORT": "http"}, "not a port number"),
    ],
)
def test_egress_proxy_refuses_to_start_on_bad_inputs(tmp_path: Path, change: dict[str, str], message: str) -> None:
    env = sidecar_env(tmp_path, "egress-proxy")
    guard_ca = mint_ca("guard", now=NOW)
    (tmp_path / "guard.crt").write_bytes(guard_ca.cert_pem)
    env.update({"HTTPS_PROXY": "http://guard:8080", "BOTTLE_UPSTREAM_CA": str(tmp_path / "guard.crt")})
    env.update(change)
    with pytest.raises(StartupError, match=message):
        proxy_entry.prepare(env)


# -- build contexts -----------------------------------------------------------------------


def test_pip_download_targets_the_sidecar_python_not_the_host() -> None:
    target = _wheels.WheelTarget(python_version="3.11", machine="x86_64", glibc=(2, 36))
    argv = _wheels.pip_download_argv("py", "/d", target, ["mitmproxy>=11.0.2,<11.1"], ["/built"])
    assert argv[:4] == ["py", "-m", "pip", "download"]
    assert "--only-binary=:all:" in argv
    assert argv[argv.index("--python-version") + 1] == "3.11"
    platforms = [argv[i + 1] for i, a in enumerate(argv) if a == "--platform"]
    assert "manylinux_2_36_x86_64" in platforms and "manylinux2014_x86_64" in platforms
    assert "manylinux_2_37_x86_64" not in platforms  # newer than the base's glibc
    assert argv[-2:] == ["mitmproxy>=11.0.2,<11.1", "pip"]
    assert ["--find-links", "/built"] == argv[argv.index("--find-links") : argv.index("--find-links") + 2]


class FakePip:
    """Stands in for pip: writes wheel files where pip would."""

    def __init__(self, fail: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self.fail = fail

    def __call__(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        self.calls.append(argv)
        verb = argv[3]
        if verb == self.fail:
            return subprocess.CompletedProcess(argv, 1, "", "ERROR: Could not find a version\n")
        dest = argv[argv.index("--dest" if verb == "download" else "--wheel-dir") + 1]
        names = ["pyperclip-1.9.0-py3-none-any.whl"] if verb == "wheel" else ["mitmproxy-11.0.2-py3-none-any.whl", "pip-26.0-py3-none-any.whl"]
        for n in names:
            Path(dest, n).write_bytes(b"PK")
        return subprocess.CompletedProcess(argv, 0, "", "")


def test_build_context_holds_wheels_lib_and_dockerfiles_and_caches_downloads(tmp_path: Path) -> None:
    pip = FakePip()
    events: list[ProgressEvent] = []
    builds = _wheels.sidecar_build_contexts(str(tmp_path / "ctx"), cache_dir=str(tmp_path / "cache"), run=pip, on_progress=events.append)
    assert [b.role for b in builds] == ["guard", "egress-proxy", "git-gate", "supervise"]
    ctx = Path(builds[0].context_dir)
    for b in builds:
        dockerfile = (ctx / b.dockerfile).read_text()
        assert dockerfile.startswith("#") and "ARG BASE=" in dockerfile and "FROM ${BASE}" in dockerfile
        assert "--no-index" in dockerfile
        # Every argument the build passes is one the Dockerfile declares, and
        # the image runs a module of its own sidecar that is in the context.
        request = b.request("localhost/t:1", "localhost/base:1", {"io.bottle.test": "1"})
        assert request.build_args["BASE"] == "localhost/base:1" and request.labels == {"io.bottle.test": "1"}
        assert all(f"ARG {name}" in dockerfile for name in request.build_args), b.role
        entry = request.build_args["ENTRY"]
        assert entry.startswith(f"bottle.sidecars.{b.role.replace('-', '_')}.")
        assert (ctx / "lib" / Path(*entry.split("."))).with_suffix(".py").is_file(), entry
    wheels = {p.name for p in (ctx / "wheels").iterdir()}
    assert {"pyperclip-1.9.0-py3-none-any.whl", "pip-26.0-py3-none-any.whl", "requirements.txt"} <= wheels
    assert (ctx / "wheels" / "requirements.txt").read_text().splitlines() == list(_wheels.SIDECAR_REQUIREMENTS)
    for module in ("core/secretscan.py", "core/egress_policy.py", "ports/errors.py", "sidecars/guard/addon.py", "sidecars/egress_proxy/addon.py"):
        assert (ctx / "lib" / "bottle" / module).is_file(), module
    assert not list((ctx / "lib").rglob("__pycache__"))
    assert not (ctx / "lib" / "bottle" / "cli").exists() and not (ctx / "lib" / "bottle" / "adapters").exists()
    assert events and all(isinstance(e, ProgressEvent) for e in events)
    # The second build downloads nothing.
    again = FakePip()
    _wheels.sidecar_build_contexts(str(tmp_path / "ctx2"), cache_dir=str(tmp_path / "cache"), run=again)
    assert again.calls == []


def test_pip_failure_is_one_clear_error_with_a_hint(tmp_path: Path) -> None:
    with pytest.raises(_wheels.WheelDownloadFailed) as err:
        _wheels.ensure_wheels(str(tmp_path), run=FakePip(fail="download"))
    assert "Could not find a version" in err.value.message and "pip config" in (err.value.hint or "")
    assert not list((tmp_path / "sidecar-wheels").glob("*/COMPLETE"))


def test_unknown_sidecar_role_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no sidecar image named"):
        _wheels.sidecar_build_contexts(str(tmp_path), cache_dir=str(tmp_path), roles=("nope",), run=FakePip())


def test_sidecar_entry_runs_only_a_bottle_sidecar_module(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from bottle.sidecars import __main__ as entry

    monkeypatch.setenv(entry.ENTRY_ENV, "os")
    with pytest.raises(SystemExit) as stopped:
        entry.main()
    assert stopped.value.code == 2 and "must name a bottle.sidecars module" in capsys.readouterr().err
