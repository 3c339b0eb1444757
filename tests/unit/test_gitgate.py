"""The git gate's core: configuration, addresses, what a push adds (as file:line), and the verdict.

Patches come from real ``git log`` runs over small repositories made in a
temporary directory (``git`` is on every machine the tests run on), plus
generated diffs for the property tests.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bottle.core.gitgate import (
    PUSH_LOG_ARGS,
    RULE_NOT_COMMIT,
    RULE_SECRET,
    FindingWaiver,
    GateConfig,
    GateRemote,
    InsecureUpstream,
    LogSplitter,
    PushFinding,
    check_upstream,
    decide_gate_push,
    decode_gate_config,
    encode_gate_config,
    gate_remote,
    gate_url,
    gitconfig_rewrites,
    parse_gate_path,
    parse_pre_receive,
    repo_path,
    scan_object,
    scan_patch,
    scan_refs,
    upstream_forms,
    verdict_message,
)
from bottle.core.errors import ManifestError
from bottle.core.gitpolicy import BranchRules, PushRefUpdate
from bottle.core.manifest_load import parse_json_manifest
from bottle.core.secretscan import BROKERED, BrokeredSecret, SecretScanner

AWS_ID = "AKIAABCDEFGHIJKLMNOP"
GITHUB = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
SLACK = "xoxb-" + "123456789012-1234567890123-AbCdEfGhIjKlMnOp"
GATE_TOKEN = "gt-Gate0Credential1Value2For3Tests4abc"
SCANNER = SecretScanner([BrokeredSecret("BOTTLE_GIT_TOKEN_0", GATE_TOKEN)])
ZERO = "0" * 40
A = "a" * 40
B = "b" * 40


def remote(**fields: object) -> GateRemote:
    base: dict[str, object] = {"name": "origin", "upstream": "https://github.com/org/repo.git", "token_env": "BOTTLE_GIT_TOKEN_0"}
    base.update(fields)
    return GateRemote(**base)  # type: ignore[arg-type]


# -- configuration ---------------------------------------------------------------


def test_config_round_trips_through_the_env_value() -> None:
    remotes = [
        remote(protected=("main", "release/*"), allow=("feature/*",), waivers=(FindingWaiver("tests/*", "jwt"),)),
        remote(name="docs", upstream="https://gitlab.example.com/g/docs", token_env="BOTTLE_GIT_TOKEN_1", username="oauth2"),
    ]
    text = encode_gate_config(remotes)
    assert decode_gate_config(text) == GateConfig(tuple(remotes))
    assert decode_gate_config(text).remote("docs") == remotes[1]
    assert decode_gate_config(text).remote("nope") is None


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"name": "../etc"}, "invalid name"),
        ({"name": "x.git"}, "invalid name"),
        ({"upstream": "ftp://h/r"}, "https://"),
        ({"upstream": "https://h/"}, "https://"),
        ({"upstream": "https://user:hunter2secret@h/r.git"}, "credentials in its URL"),
        ({"upstream": "http://h/r.git"}, "must be an https:// URL, got http://"),
        ({"upstream": "HTTP://h/r.git"}, "must be an https:// URL"),
        ({"upstream": "https://h:notaport/r.git"}, "not a valid URL"),
        ({"token_env": "lower"}, "token_env"),
        ({"username": "a\nb"}, "username"),
    ],
)
def test_bad_config_is_refused_without_echoing_values(fields: dict[str, str], expected: str) -> None:
    text = encode_gate_config([remote(**fields)])
    with pytest.raises(ValueError) as err:
        decode_gate_config(text)
    assert expected in str(err.value)
    assert "hunter2secret" not in str(err.value)


def test_config_that_is_not_json_or_has_unknown_keys_is_refused() -> None:
    with pytest.raises(ValueError, match="not JSON"):
        decode_gate_config("{oops")
    with pytest.raises(ValueError, match="not a valid remote list"):
        decode_gate_config('{"remotes": [{"name": "o", "upstream": "https://h/r", "token_env": "T", "extra": 1}]}')
    with pytest.raises(ValueError, match="appears twice"):
        decode_gate_config(encode_gate_config([remote(), remote()]))


def test_branch_rules_protect_main_and_master_unless_the_manifest_says_otherwise() -> None:
    assert remote().branch_rules() == BranchRules(protected=("main", "master"), allow=None)
    assert remote(protected=("trunk",)).branch_rules() == BranchRules(protected=("trunk",), allow=None)
    assert remote(allow=("bot/*",)).branch_rules().allow == ("bot/*",)


def test_gate_remote_from_a_plan_entry() -> None:
    class PlanRemote(msgspec.Struct):
        name: str
        upstream: str
        gate_url: str
        token_ref: str
        token_env: str
        token_present: bool
        protected: tuple[str, ...] = ()
        allow: tuple[str, ...] = ()

    plan = PlanRemote("origin", "https://h/o/r.git", "http://git-gate:8080/origin.git", "env:T", "BOTTLE_GIT_TOKEN_0", True, ("main",))
    assert gate_remote(plan) == GateRemote("origin", "https://h/o/r.git", "BOTTLE_GIT_TOKEN_0", ("main",), ())
    # A plan made from a manifest that skipped validation still never sends a token over http.
    insecure = PlanRemote("origin", "http://h/o/r.git", "http://git-gate:8080/origin.git", "env:T", "BOTTLE_GIT_TOKEN_0", True)
    with pytest.raises(InsecureUpstream) as err:
        gate_remote(insecure)
    assert err.value.exit_code == 2 and "https" in (err.value.hint or "")


@pytest.mark.parametrize(
    "upstream",
    ["https://github.com/o/r.git", "https://git.example.test:8443/o/r", "https://[fd00::1]:8443/o/r.git"],
)
def test_https_upstreams_pass(upstream: str) -> None:
    check_upstream("origin", upstream)


@pytest.mark.parametrize(
    "upstream",
    ["http://github.com/o/r.git", "git://github.com/o/r.git", "ssh://git@github.com/o/r.git", "github.com/o/r.git",
     "https://tok@github.com/o/r.git", "https:///o/r.git"],
)
def test_other_upstreams_are_refused_without_quoting_them(upstream: str) -> None:
    with pytest.raises(InsecureUpstream) as err:
        check_upstream("origin", upstream)
    assert "origin" in str(err.value) and upstream not in str(err.value) and err.value.hint


def test_the_manifest_refuses_an_http_git_upstream() -> None:
    remote = {"name": "o", "upstream": "http://git.example.com/o/r.git", "token_ref": "T"}
    with pytest.raises(ManifestError) as err:
        parse_json_manifest(json.dumps({"agents": {"a": {"image": "x", "bottle": {"git": [remote]}}}}), "m.json", "/p")
    assert err.value.field == "agents.a.bottle.git[0].upstream" and "https://" in err.value.problem


# -- addresses ------------------------------------------------------------------


def test_repo_paths_and_urls() -> None:
    assert repo_path("origin") == "/srv/git/origin.git"
    assert repo_path("a.b-c_d", "/tmp/x/") == "/tmp/x/a.b-c_d.git"
    assert gate_url("origin") == "http://git-gate:8080/origin.git"
    for bad in ("../x", "", "a/b", "-x"):
        with pytest.raises(ValueError):
            repo_path(bad)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/origin.git/info/refs", ("origin", "info/refs")),
        ("/origin/info/refs", ("origin", "info/refs")),
        ("//origin.git//git-upload-pack", ("origin", "git-upload-pack")),
        ("/my.repo.git/git-receive-pack", ("my.repo", "git-receive-pack")),
        ("/origin.git/HEAD", None),
        ("/origin.git/objects/info/packs", None),
        ("/origin.git/info/refs/../../x", None),
        ("/../origin.git/info/refs", None),
        ("/origin.git/git%2Dreceive-pack", None),
        ("/origin.git.git/info/refs", None),
        ("/", None),
        ("/healthz", None),
    ],
)
def test_parse_gate_path(path: str, expected: tuple[str, str] | None) -> None:
    assert parse_gate_path(path) == expected


def test_upstream_forms_cover_the_spellings_people_use() -> None:
    assert upstream_forms("https://GitHub.com/org/repo.git") == (
        "https://github.com/org/repo.git",
        "https://github.com/org/repo",
        "ssh://git@github.com/org/repo.git",
        "ssh://git@github.com/org/repo",
        "git@github.com:org/repo.git",
        "git@github.com:org/repo",
    )
    assert upstream_forms("https://git.example.com:8443/a/b/") == (
        "https://git.example.com:8443/a/b.git",
        "https://git.example.com:8443/a/b",
    )


def test_gitconfig_rewrites_send_every_spelling_to_the_gate(tmp_path: Path) -> None:
    remotes = [remote(), remote(name="docs", upstream="https://gitlab.example.com/g/docs")]
    (tmp_path / ".gitconfig").write_text(gitconfig_rewrites(remotes))
    env = {"HOME": str(tmp_path), "PATH": os.environ["PATH"], "GIT_CONFIG_NOSYSTEM": "1"}

    def resolved(url: str) -> str:
        return subprocess.run(["git", "ls-remote", "--get-url", url], env=env, capture_output=True, text=True, check=True).stdout.strip()

    for form in upstream_forms(remotes[0].upstream):
        assert resolved(form) == "http://git-gate:8080/origin.git"
    assert resolved("https://gitlab.example.com/g/docs.git") == "http://git-gate:8080/docs.git"
    assert resolved("https://github.com/org/other.git") == "https://github.com/org/other.git"
    assert gitconfig_rewrites([]) == ""


# -- pre-receive input --------------------------------------------------------------


def test_parse_pre_receive_lines() -> None:
    text = f"{ZERO} {A} refs/heads/new\n\n{A} {B} refs/heads/main\n{'c' * 64} {'d' * 64} refs/tags/v1\n"
    updates = parse_pre_receive(text.encode())
    assert updates == [
        PushRefUpdate("refs/heads/new", ZERO, A),
        PushRefUpdate("refs/heads/main", A, B),
        PushRefUpdate("refs/tags/v1", "c" * 64, "d" * 64),
    ]
    assert updates[0].is_creation


@pytest.mark.parametrize("line", [f"{A} {B}", f"{A[:39]} {B} refs/heads/x", f"{A.upper()} {B} refs/heads/x", f"{A} {B} "])
def test_parse_pre_receive_refuses_malformed_lines(line: str) -> None:
    with pytest.raises(ValueError, match="line 2"):
        parse_pre_receive(f"{A} {B} refs/heads/ok\n{line}\n")


@given(st.text())
def test_parse_pre_receive_raises_only_value_error(text: str) -> None:
    try:
        parse_pre_receive(text)
    except ValueError:
        pass


# -- what a push adds: real git output ----------------------------------------------


class Repo:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.env = {
            "PATH": os.environ["PATH"], "HOME": str(path), "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@e",
        }
        path.mkdir(parents=True)
        self.git("init", "-q", "-b", "main")

    def git(self, *args: str) -> str:
        return subprocess.run(["git", *args], cwd=self.path, env=self.env, capture_output=True, check=True).stdout.decode()

    def write(self, name: str, text: str | bytes) -> None:
        target = self.path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            target.write_bytes(text)
        else:
            target.write_text(text)

    def commit(self, message: str = "change") -> str:
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)
        return self.git("rev-parse", "HEAD").strip()

    def log(self, tip: str = "HEAD", *exclude: str) -> bytes:
        args = [*PUSH_LOG_ARGS, tip]
        if exclude:
            args += ["--not", *exclude]
        return subprocess.run(["git", *args], cwd=self.path, env=self.env, capture_output=True, check=True).stdout

    def findings(self, tip: str = "HEAD", *exclude: str) -> set[tuple[str, str, int, str]]:
        splitter = LogSplitter()
        out: set[tuple[str, str, int, str]] = set()
        for sha, patch in splitter.feed(self.log(tip, *exclude)) + splitter.finish():
            out |= {(f.where, f.path, f.line, f.rule) for f in scan_patch(SCANNER, sha, patch)}
        return out


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return Repo(tmp_path / "r")


def test_only_added_lines_are_reported_with_their_new_line_number(repo: Repo) -> None:
    repo.write("app/settings.py", "a = 1\nold = 'AKIAIOSFODNN7EXAMPLE'\nb = 2\nc = 3\n")
    base = repo.commit("base")
    repo.write("app/settings.py", f"a = 1\nb = 2\nkey = '{AWS_ID}'\nc = 3\ntoken = '{GITHUB}'\n")
    repo.commit("edit")
    # The old key was removed and sits upstream already; only the new ones count.
    assert repo.findings("HEAD", base) == {
        ("file", "app/settings.py", 3, "aws-access-key-id"),
        ("file", "app/settings.py", 5, "github-token"),
    }


def test_context_lines_and_hunk_headers_are_not_new(repo: Repo) -> None:
    lines = [f"line {i}" for i in range(40)]
    lines[10] = f"def f():  # {SLACK}"
    repo.write("m.py", "\n".join(lines) + "\n")
    base = repo.commit()
    lines[13] = "changed"
    repo.write("m.py", "\n".join(lines) + "\n")
    repo.commit()
    log = repo.log("HEAD", base)
    assert SLACK.encode() in log  # in context (and the hunk header), but not added
    assert repo.findings("HEAD", base) == set()


def test_new_files_renames_and_odd_names(repo: Repo) -> None:
    repo.write("keep.txt", "x\n" * 30)
    base = repo.commit()
    (repo.path / "moved dir").mkdir()
    repo.git("mv", "keep.txt", "moved dir/kept.txt")
    repo.write("dir with space/ünï code.pem", "header\n-----BEGIN RSA PRIVATE KEY-----\n")
    repo.write('q"uote\tname.txt', f"\n\n{GITHUB}\n")
    repo.commit()
    assert repo.findings("HEAD", base) == {
        ("file", "dir with space/ünï code.pem", 2, "private-key"),
        ("file", 'q"uote\tname.txt', 3, "github-token"),
    }


def test_a_secret_in_a_new_file_name_is_found_and_redacted(repo: Repo) -> None:
    repo.write("ok.txt", "x\n")
    base = repo.commit()
    repo.write(f"leak-{AWS_ID}.txt", "harmless\n")
    repo.commit()
    found = repo.findings("HEAD", base)
    assert ("path", "leak-[REDACTED:aws-access-key-id].txt", 0, "aws-access-key-id") in found
    assert all(AWS_ID not in f[1] for f in found)


def test_an_empty_new_file_named_with_a_secret_is_found(repo: Repo) -> None:
    repo.write("ok.txt", f"x\n")
    base = repo.commit()
    repo.write(f"{GITHUB}.txt", "")
    repo.write("dir/other.txt", "y\n")
    repo.commit()
    assert repo.findings("HEAD", base) == {("path", "[REDACTED:github-token].txt", 0, "github-token")}


def test_an_existing_file_name_is_not_new(repo: Repo) -> None:
    repo.write(f"{GITHUB}.txt", "a\n")
    base = repo.commit()
    repo.write(f"{GITHUB}.txt", "a\nb\n")
    repo.commit()
    assert repo.findings("HEAD", base) == set()


def test_binary_files_are_scanned_too(repo: Repo) -> None:
    repo.write("blob.bin", b"\x00\x01\x02binary\x00" + AWS_ID.encode() + b"\x00\xff\n")
    repo.commit()
    assert ("file", "blob.bin", 1, "aws-access-key-id") in repo.findings()


def test_root_commit_and_encoded_secrets(repo: Repo) -> None:
    encoded = base64.b64encode(f"id={AWS_ID}".encode()).decode()
    repo.write("data.json", f'{{\n  "blob": "{encoded}",\n  "hex": "{GITHUB.encode().hex()}"\n}}\n')
    repo.commit("root")
    assert repo.findings() == {
        ("file", "data.json", 2, "aws-access-key-id"),
        ("file", "data.json", 3, "github-token"),
    }


def test_merges_report_only_what_the_merge_itself_adds(repo: Repo) -> None:
    repo.write("a.txt", "one\ntwo\nthree\n")
    base = repo.commit("base")
    repo.git("checkout", "-q", "-b", "side")
    repo.write("a.txt", f"one\ntwo\nthree\nside {SLACK}\n")
    repo.commit("side")
    repo.git("checkout", "-q", "main")
    repo.write("a.txt", f"zero\none\ntwo\nthree\n")
    repo.commit("main")
    repo.git("merge", "-q", "--no-commit", "side")
    repo.write("a.txt", f"zero\none\ntwo\nthree\nside {SLACK}\nevil {GITHUB}\n")
    merge = repo.commit("merge")
    # Everything new since base: the side branch's line and the merge's own.
    assert repo.findings(merge, base) == {
        ("file", "a.txt", 4, "slack-token"),
        ("file", "a.txt", 6, "github-token"),
    }
    # With the side branch already upstream, only the evil merge line is new.
    assert repo.findings(merge, base, "side") == {("file", "a.txt", 6, "github-token")}


def test_the_gates_own_credential_is_found_in_any_encoding(repo: Repo) -> None:
    repo.write("x.txt", f"a\n{base64.b64encode(GATE_TOKEN.encode()).decode()}\n")
    repo.commit()
    assert repo.findings() == {("file", "x.txt", 2, BROKERED)}


def test_commit_objects_report_message_and_header_lines(repo: Repo) -> None:
    repo.env["GIT_AUTHOR_NAME"] = f"Eve {AWS_ID}"
    sha = repo.commit(f"subject\n\nbody\nsee {GITHUB}\n")
    raw = subprocess.run(["git", "cat-file", "commit", sha], cwd=repo.path, env=repo.env, capture_output=True, check=True).stdout
    found = {(f.where, f.line, f.rule) for f in scan_object(SCANNER, sha, raw)}
    # A root commit's object: tree, author (line 2), committer, blank, message.
    assert found == {("header", 2, "aws-access-key-id"), ("message", 4, "github-token")}


def test_ref_names_are_scanned() -> None:
    found = scan_refs(SCANNER, [PushRefUpdate(f"refs/heads/x-{AWS_ID}", ZERO, A), PushRefUpdate("refs/heads/ok", ZERO, A)])
    assert [(f.where, f.path, f.rule) for f in found] == [("ref", "refs/heads/x-[REDACTED:aws-access-key-id]", "aws-access-key-id")]


# -- what a push adds: generated diffs -----------------------------------------------


def _diff(path: str, hunks: list[tuple[int, int, list[str]]]) -> bytes:
    out = [f"\0commit {A}\n", f"\ndiff --git a/{path} b/{path}\n", "index 1..2 100644\n", f"--- a/{path}\n", f"+++ b/{path}\n"]
    for old_start, new_start, rows in hunks:
        old_n = sum(1 for r in rows if r[0] in "- ")
        new_n = sum(1 for r in rows if r[0] in "+ ")
        out.append(f"@@ -{old_start},{old_n} +{new_start},{new_n} @@ ctx {AWS_ID}\n")
        out += [r + "\n" for r in rows]
    return "".join(out).encode()


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.lists(st.tuples(st.sampled_from("+- "), st.booleans()), min_size=1, max_size=30),
        min_size=1,
        max_size=4,
    ),
    st.integers(min_value=1, max_value=500),
)
def test_generated_hunks_map_every_secret_to_its_line(hunks: list[list[tuple[str, bool]]], first: int) -> None:
    expected: set[int] = set()
    built: list[tuple[int, int, list[str]]] = []
    new_line = first
    for rows in hunks:
        start = new_line
        text: list[str] = []
        for kind, planted in rows:
            body = f"x = '{AWS_ID}'" if planted else "x = 1"
            text.append(kind + body)
            if kind == "+" and planted:
                expected.add(new_line)
            if kind in "+ ":
                new_line += 1
        built.append((start, start, text))
        new_line += 5
    splitter = LogSplitter()
    records = splitter.feed(_diff("f.py", built)) + splitter.finish()
    found = {f.line for sha, patch in records for f in scan_patch(SCANNER, sha, patch)}
    assert found == expected


@given(st.lists(st.integers(min_value=1, max_value=400), max_size=12), st.integers(min_value=1, max_value=5))
def test_log_splitter_cuts_the_same_records_whatever_the_chunks(cuts: list[int], commits: int) -> None:
    stream = b"".join(
        f"\0commit {str(i) * 40}\n\ndiff --git a/x b/x\n+++ b/x\n@@ -0,0 +1,2 @@\n+\0commit not a header\n+y\n".encode()
        for i in range(commits)
    )
    expected = LogSplitter().feed(stream)
    whole = LogSplitter()
    expected = whole.feed(stream) + whole.finish()
    splitter = LogSplitter()
    got: list[tuple[str, bytes]] = []
    pos = 0
    for cut in sorted(cuts):
        got += splitter.feed(stream[pos:cut])
        pos = max(pos, cut)
    got += splitter.feed(stream[pos:]) + splitter.finish()
    assert got == expected
    assert [sha for sha, _ in got] == [str(i) * 40 for i in range(commits)]
    assert all(patch.startswith(b"\n") for _, patch in got)


@pytest.mark.parametrize("stream", [b"not git log output", b"commit abc\n", b"\0commit abc\n", f"\0commit {A}".encode() + b"x\n"])
def test_log_splitter_refuses_other_input(stream: bytes) -> None:
    splitter = LogSplitter()
    with pytest.raises(ValueError):
        splitter.feed(stream + b"\n\0commit " + A.encode() + b"\n")
        splitter.finish()


def test_log_splitter_of_nothing_is_nothing() -> None:
    assert LogSplitter().finish() == []


# -- the verdict --------------------------------------------------------------------


def _finding(path: str = "tests/fixtures/creds.py", rule: str = "aws-access-key-id", where: str = "file") -> PushFinding:
    return PushFinding(A, where, path, 7, rule)  # type: ignore[arg-type]


def test_clean_allowed_push_is_accepted() -> None:
    verdict = decide_gate_push([PushRefUpdate("refs/heads/main", A, B)], BranchRules(), {"refs/heads/main": True}, [])
    assert verdict.accepted and verdict.rule == "ok"
    assert "passed" in verdict_message(verdict, "origin")


def test_findings_refuse_the_push_and_are_named_by_file_line_and_rule() -> None:
    verdict = decide_gate_push([PushRefUpdate("refs/heads/topic", ZERO, A)], BranchRules(), {}, [_finding()])
    assert not verdict.accepted and verdict.rule == RULE_SECRET
    text = verdict_message(verdict, "origin")
    assert "REFUSED" in text and "nothing was sent upstream" in text
    assert "tests/fixtures/creds.py:7: aws-access-key-id" in text


def test_branch_rules_come_first() -> None:
    verdict = decide_gate_push(
        [PushRefUpdate("refs/heads/main", A, B)], BranchRules(), {"refs/heads/main": False}, [_finding()]
    )
    assert not verdict.accepted and verdict.rule == "protected-non-fast-forward"
    text = verdict_message(verdict, "origin")
    assert "protected-non-fast-forward" in text and "creds.py:7" in text


def test_waivers_come_only_from_matching_manifest_rules() -> None:
    updates = [PushRefUpdate("refs/heads/topic", ZERO, A)]
    waiver = FindingWaiver("tests/fixtures/*", "aws-access-key-id")
    ok = decide_gate_push(updates, BranchRules(), {}, [_finding()], [waiver])
    assert ok.accepted and ok.waived == (_finding(),)
    assert "waived by the manifest" in verdict_message(ok, "origin")
    for finding in (_finding(path="src/creds.py"), _finding(rule="github-token"), _finding(where="message"),
                    _finding(rule=BROKERED)):
        assert not decide_gate_push(updates, BranchRules(), {}, [finding], [waiver, FindingWaiver("*", BROKERED)]).accepted


def test_refs_to_blobs_or_trees_are_refused() -> None:
    updates = [PushRefUpdate("refs/tags/blob", ZERO, A), PushRefUpdate("refs/tags/ok", ZERO, B)]
    verdict = decide_gate_push(updates, BranchRules(), {}, [], peeled_types={"refs/tags/blob": "blob", "refs/tags/ok": "commit"})
    assert not verdict.accepted and verdict.rule == RULE_NOT_COMMIT
    assert [d.allowed for d in verdict.decisions] == [False, True]
    assert "refs/tags/blob: not-a-commit" in verdict_message(verdict, "origin")


def test_no_updates_is_no_push() -> None:
    verdict = decide_gate_push([], BranchRules(), {}, [])
    assert not verdict.accepted
    assert "updates no refs" in verdict_message(verdict, "origin")


@settings(max_examples=50, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from([AWS_ID, GITHUB, SLACK, GATE_TOKEN]), st.text(alphabet="abcdefXYZ/_-. ", max_size=20))
def test_the_message_never_carries_a_secret(secret: str, noise: str) -> None:
    ref = f"refs/heads/{noise.strip('/. ') or 'b'}-{secret}"
    updates = [PushRefUpdate(ref, ZERO, A)]
    findings = scan_refs(SCANNER, updates) + [_finding(path=f"dir/{secret}.txt")]
    verdict = decide_gate_push(updates, BranchRules(allow=("x/*",)), {}, findings)
    text = verdict_message(verdict, "origin", SCANNER)
    assert secret not in text
    assert SCANNER.scan(text, "message") == []
