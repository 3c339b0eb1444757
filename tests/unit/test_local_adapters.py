"""Local host adapters: the filesystem state store, the system clock and randomness, secrets.

Results are checked through the filesystem itself (os.stat, open), not only
by asking the store.
"""

from __future__ import annotations

import os
import stat
import threading
from datetime import timezone
from pathlib import Path

import pytest

from bottle.adapters.local import (
    EnvFileSecretSource,
    LocalStateStore,
    SecretUnavailable,
    SystemClock,
    SystemRandomness,
)
from bottle.adapters.local import secret_source as secret_source_module
from bottle.adapters.local import state_store as state_store_module
from bottle.core.identity import InvalidIdentity
from bottle.core.state import ca_key_path, is_secret_path
from bottle.adapters.local import UnsafeStateFile
from bottle.ports import BottleError, Clock, InputError, Randomness, SecretSource, StateStore

ID = "implementer-k3x9q"


def mode(path: str | Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def store(tmp_path: Path) -> LocalStateStore:
    return LocalStateStore(str(tmp_path / "state" / "bottles"))


# --------------------------------------------------------------------------
# LocalStateStore
# --------------------------------------------------------------------------


def test_implements_the_port(store: LocalStateStore) -> None:
    assert isinstance(store, StateStore)


def test_write_then_read(store: LocalStateStore) -> None:
    store.write(ID, "metadata.json", b"{}")
    assert store.read(ID, "metadata.json") == b"{}"
    assert Path(store.host_path(ID, "metadata.json")).read_bytes() == b"{}"


def test_read_missing_is_none(store: LocalStateStore) -> None:
    assert store.read(ID, "metadata.json") is None


def test_overwrite_replaces_content(store: LocalStateStore) -> None:
    store.write(ID, "Dockerfile", b"FROM a\n" * 100)
    store.write(ID, "Dockerfile", b"FROM b\n")
    assert store.read(ID, "Dockerfile") == b"FROM b\n"


def test_modes_ignore_the_umask(store: LocalStateStore) -> None:
    old = os.umask(0)
    try:
        store.write(ID, "metadata.json", b"{}")
        store.write(ID, ca_key_path("guard"), b"KEY", secret=is_secret_path(ca_key_path("guard")))
        store.write(ID, "transcript/deep/x.jsonl", b"")
    finally:
        os.umask(old)
    root = Path(store.root)
    assert mode(root) == 0o700
    assert mode(root / ID) == 0o700
    assert mode(root / ID / "ca") == 0o700
    assert mode(root / ID / "transcript") == 0o700
    assert mode(root / ID / "transcript" / "deep") == 0o700
    assert mode(root / ID / "ca" / "guard.key") == 0o600
    assert mode(root / ID / "metadata.json") == 0o644


def test_secret_rewrite_of_a_public_file_becomes_0600(store: LocalStateStore) -> None:
    store.write(ID, "ca/guard.key", b"x")
    store.write(ID, "ca/guard.key", b"KEY", secret=True)
    assert mode(store.host_path(ID, "ca/guard.key")) == 0o600


def test_write_is_atomic_when_the_rename_fails(store: LocalStateStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store.write(ID, "metadata.json", b"old")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(state_store_module.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk on fire"):
        store.write(ID, "metadata.json", b"new")
    monkeypatch.undo()
    assert store.read(ID, "metadata.json") == b"old"
    assert os.listdir(store.host_path(ID)) == ["metadata.json"]  # no temporary file left


def test_concurrent_readers_never_see_a_partial_file(store: LocalStateStore) -> None:
    big_a, big_b = b"a" * 200_000, b"b" * 200_000
    store.write(ID, "transcript/t", big_a)
    seen: set[bytes] = set()
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            data = store.read(ID, "transcript/t")
            assert data is not None
            seen.add(data[:1] + data[-1:] + bytes([len(data) == 200_000]))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(30):
            store.write(ID, "transcript/t", big_a if i % 2 else big_b)
    finally:
        stop.set()
        thread.join()
    assert seen <= {b"aa\x01", b"bb\x01"}


@pytest.mark.parametrize(
    "relpath", ["/etc/passwd", "../x", "a/../../x", "a/./b", "a//b", "", "a\\b", "x\x00y", "..", "a/"]
)
def test_bad_relpaths_are_refused(store: LocalStateStore, relpath: str) -> None:
    with pytest.raises(ValueError):
        store.write(ID, relpath, b"x")
    with pytest.raises(ValueError):
        store.read(ID, relpath)
    assert not os.path.exists(store.root)


@pytest.mark.parametrize("identity", ["", "..", "../x-abcde", "Implementer-k3x9q", "implementer", "a-abcde/b"])
def test_bad_identities_are_refused(store: LocalStateStore, identity: str) -> None:
    with pytest.raises(InvalidIdentity):
        store.write(identity, "metadata.json", b"x")
    with pytest.raises(ValueError):  # InvalidIdentity is also a ValueError
        store.host_path(identity)


def test_symlinks_inside_state_are_not_followed(store: LocalStateStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "id_rsa").write_bytes(b"PRIVATE")
    store.write(ID, "metadata.json", b"{}")
    os.symlink(outside, store.host_path(ID, "transcript"))
    os.symlink(outside / "id_rsa", store.host_path(ID, "Dockerfile"))
    with pytest.raises(ValueError, match="symlink"):
        store.read(ID, "transcript/id_rsa")
    with pytest.raises(ValueError, match="symlink"):
        store.write(ID, "transcript/new", b"x")
    with pytest.raises(ValueError, match="symlink"):
        store.read(ID, "Dockerfile")
    assert not (outside / "new").exists()
    store.remove_bottle(ID)
    assert (outside / "id_rsa").read_bytes() == b"PRIVATE"


def test_a_fifo_in_state_is_refused_not_waited_on(store: LocalStateStore) -> None:
    # The agent owns its home under state: it can plant a FIFO where the host reads a file.
    store.write(ID, "home/.gitconfig", b"[user]\n")
    fifo = store.host_path(ID, "home/.claude.json")
    os.mkfifo(fifo)
    outcome: list[BaseException | bytes | None] = []

    def read() -> None:
        try:
            outcome.append(store.read(ID, "home/.claude.json"))
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=30)
    assert outcome, "reading a FIFO in the state hung"
    (error,) = outcome
    assert isinstance(error, UnsafeStateFile) and isinstance(error, BottleError) and isinstance(error, ValueError)
    assert "FIFO" in error.message and fifo in error.message and error.hint
    assert store.read(ID, "home/.gitconfig") == b"[user]\n"
    # Writing replaces the FIFO with a regular file, which then reads back.
    store.write(ID, "home/.claude.json", b"{}")
    assert stat.S_ISREG(os.lstat(fifo).st_mode) and store.read(ID, "home/.claude.json") == b"{}"


def test_only_regular_files_are_read(store: LocalStateStore) -> None:
    store.write(ID, "transcript/a", b"x")
    with pytest.raises(UnsafeStateFile, match="a directory"):
        store.read(ID, "transcript")


def test_exists_delete_and_list_dir(store: LocalStateStore) -> None:
    store.write(ID, ".preserve", b"")
    store.write(ID, "proposals/2.json", b"{}")
    store.write(ID, "proposals/1.json", b"{}")
    assert store.exists(ID, ".preserve")
    assert store.list_dir(ID, "") == [".preserve", "proposals"]
    assert store.list_dir(ID, "proposals") == ["1.json", "2.json"]
    assert store.list_dir(ID, "nothing") == []
    assert store.list_dir("other-abcde", "") == []
    store.delete(ID, ".preserve")
    store.delete(ID, ".preserve")  # missing is fine
    assert not store.exists(ID, ".preserve")
    store.delete(ID, "proposals")
    assert not os.path.exists(store.host_path(ID, "proposals"))


def test_remove_bottle_and_identities(store: LocalStateStore) -> None:
    assert store.identities() == []
    store.write(ID, "metadata.json", b"{}")
    store.write("reviewer-00000", "metadata.json", b"{}")
    os.makedirs(os.path.join(store.root, "not an identity"))
    Path(store.root, "stray-file-abcde").write_bytes(b"")
    assert store.identities() == [ID, "reviewer-00000"]
    store.remove_bottle(ID)
    store.remove_bottle(ID)  # missing is fine
    assert not os.path.exists(os.path.join(store.root, ID))
    assert store.identities() == ["reviewer-00000"]


def test_host_path_is_absolute_and_need_not_exist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = LocalStateStore("relative/root")
    path = store.host_path(ID, "transcript")
    assert os.path.isabs(path)
    assert path == str(tmp_path / "relative" / "root" / ID / "transcript")
    assert store.host_path(ID) == str(tmp_path / "relative" / "root" / ID)
    assert not os.path.exists(path)


def test_default_root_honours_xdg_state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    store = LocalStateStore()
    assert store.root == str(tmp_path / "xdg" / "bottle" / "bottles")
    store.write(ID, "metadata.json", b"{}")
    assert (tmp_path / "xdg" / "bottle" / "bottles" / ID / "metadata.json").read_bytes() == b"{}"


# --------------------------------------------------------------------------
# clock and randomness
# --------------------------------------------------------------------------


def test_system_clock() -> None:
    clock = SystemClock()
    assert isinstance(clock, Clock)
    now = clock.now()
    assert now.tzinfo is not None and now.utcoffset() == timezone.utc.utcoffset(now)
    first = clock.monotonic()
    assert clock.monotonic() >= first


def test_system_randomness() -> None:
    rng = SystemRandomness()
    assert isinstance(rng, Randomness)
    drawn = rng.choice("ab", 200)
    assert len(drawn) == 200 and set(drawn) == {"a", "b"}
    assert rng.choice("xyz", 0) == ""
    with pytest.raises(ValueError):
        rng.choice("", 3)


# --------------------------------------------------------------------------
# EnvFileSecretSource
# --------------------------------------------------------------------------

VALUE = "sk-ant-SECRET-value-123"


def test_secret_source_implements_the_port() -> None:
    assert isinstance(EnvFileSecretSource({}), SecretSource)


def test_env_secrets() -> None:
    source = EnvFileSecretSource({"TOKEN": VALUE + "\n", "EMPTY": "", "NEWLINE": "\r\n"})
    assert source.read("env", "TOKEN") == VALUE
    assert source.present("env", "TOKEN")
    assert not source.present("env", "MISSING")
    assert not source.present("env", "EMPTY")
    assert not source.present("env", "NEWLINE")


def test_env_defaults_to_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    source = EnvFileSecretSource()
    monkeypatch.setenv("BOTTLE_TEST_TOKEN", VALUE)
    assert source.read("env", "BOTTLE_TEST_TOKEN") == VALUE
    monkeypatch.delenv("BOTTLE_TEST_TOKEN")
    assert not source.present("env", "BOTTLE_TEST_TOKEN")


@pytest.mark.parametrize(("name", "words"), [("MISSING", "not set"), ("EMPTY", "is empty")])
def test_env_errors_name_the_reference(name: str, words: str) -> None:
    with pytest.raises(SecretUnavailable) as info:
        EnvFileSecretSource({"EMPTY": "\n", "OTHER": VALUE}).read("env", name)
    err = info.value
    assert isinstance(err, InputError) and err.exit_code == 2
    assert f"env:{name}" in str(err) and words in str(err)
    assert VALUE not in str(err) and VALUE not in (err.hint or "")


def test_file_secrets_with_tilde_and_relative_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    (home / ".tokens").mkdir(parents=True)
    (home / ".tokens" / "gh").write_text(VALUE + "\n")
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "token.txt").write_text(VALUE + "\r\n")
    monkeypatch.setenv("HOME", str(home))
    source = EnvFileSecretSource({}, base_dir=str(tmp_path / "project"))
    assert source.read("file", "~/.tokens/gh") == VALUE
    assert source.read("file", "token.txt") == VALUE
    assert source.read("file", str(home / ".tokens" / "gh")) == VALUE
    assert source.present("file", "~/.tokens/gh")
    assert not source.present("file", "~/.tokens/none")


def test_file_value_keeps_inner_whitespace(tmp_path: Path) -> None:
    (tmp_path / "t").write_text("user:pass word \n\n")
    assert EnvFileSecretSource({}, base_dir=str(tmp_path)).read("file", "t") == "user:pass word "


@pytest.mark.parametrize(
    ("setup", "words"),
    [
        ("missing", "no such file"),
        ("empty", "is empty"),
        ("dir", "is a directory"),
        ("binary", "not UTF-8"),
        ("huge", "larger than"),
        ("unreadable", "permission denied"),
    ],
)
def test_file_errors_name_the_reference_never_the_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setup: str, words: str
) -> None:
    path = tmp_path / "secret"
    if setup == "empty":
        path.write_text("\n")
    elif setup == "dir":
        path.mkdir()
    elif setup == "binary":
        path.write_bytes(VALUE.encode() + b"\xff\xfe")
    elif setup == "huge":
        path.write_text(VALUE * 100_000)
    elif setup == "unreadable":
        path.write_text(VALUE)
        path.chmod(0)
        if os.geteuid() == 0:  # root reads any file: make open() refuse as it would for a user

            def refuse(*args: object, **kwargs: object) -> None:
                raise PermissionError(13, "Permission denied", str(path))

            monkeypatch.setattr(secret_source_module, "open", refuse, raising=False)
    source = EnvFileSecretSource({})
    with pytest.raises(SecretUnavailable) as info:
        source.read("file", str(path))
    err = info.value
    assert f"secret file:{path}" in str(err) and words in str(err)
    assert VALUE not in str(err) and VALUE not in (err.hint or "")
    # no chained exception (a UnicodeDecodeError holds the file's bytes)
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)
    assert not source.present("file", str(path))


def test_unknown_kind() -> None:
    with pytest.raises(SecretUnavailable, match="unknown secret kind 'vault'"):
        EnvFileSecretSource({}).read("vault", "x")
