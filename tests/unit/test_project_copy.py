"""`--copy-cwd` keeps credentials out of the image: what is left out, what .git/config becomes, the preflight line."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from bottle.adapters.local.project_copy import copy_project, survey_project
from bottle.cli.app import cli
from bottle.core.project_copy import (
    ProjectCopy,
    decide_project_copy,
    is_credential_file,
    is_git_config,
    strip_git_config,
    strip_url_credentials,
)

TOKEN = "ghp_" + "Zq9Xw2" * 6
ROOT = Path(__file__).resolve().parents[2]
CLAUDE = str(ROOT / "docs" / "examples" / "claude-code.json")

GIT_CONFIG = f"""[core]
\trepositoryformatversion = 0
\tbare = false
[remote "origin"]
\turl = https://alice:{TOKEN}@github.com/org/repo.git
\tfetch = +refs/heads/*:refs/remotes/origin/*
[remote "mirror"]
\turl = ssh://git@git.example.com/org/repo.git
[remote "plain"]
\turl = https://gitlab.example.com/org/repo.git
[branch "main"]
\tremote = origin
\tmerge = refs/heads/main
"""


# -- which files stay out ------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [".env", ".env.local", ".env.production", "services/api/.env", ".git-credentials", ".netrc", "_netrc",
     ".pgpass", "deploy/id_rsa", "id_ed25519", "a/b/.env.development.local"],
)
def test_credential_files_are_left_out_at_any_depth(path: str) -> None:
    assert is_credential_file(path)


@pytest.mark.parametrize(
    "path",
    [".env.example", ".env.sample", ".env.template", "config/.env.example", "id_rsa.pub", "env", ".envrc", "src/env.py",
     ".git/config", "netrc.md", "README.md", ".gitignore"],
)
def test_ordinary_files_and_templates_are_copied(path: str) -> None:
    assert not is_credential_file(path)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (".git/config", True),
        (".git/config.worktree", True),
        (".git/modules/vendor/lib/config", True),
        (".git/modules/a/modules/b/config", True),
        (".git/worktrees/w1/config.worktree", True),
        ("vendor/tool/.git/config", True),
        (".git/logs/config", False),
        ("config", False),
        ("src/config", False),
        (".git/hooks/config", False),
    ],
)
def test_git_config_files_are_recognised(path: str, expected: bool) -> None:
    assert is_git_config(path) is expected


# -- what .git/config becomes ------------------------------------------------------------


def test_remote_urls_lose_their_credentials_and_nothing_else_changes() -> None:
    text, urls, headers = strip_git_config(GIT_CONFIG)
    assert TOKEN not in text and "alice" not in text
    assert "\turl = https://github.com/org/repo.git\n" in text
    assert "\turl = ssh://git@git.example.com/org/repo.git\n" in text  # an account name, not a secret
    assert (urls, headers) == (1, 0)
    assert text == GIT_CONFIG.replace(f"alice:{TOKEN}@", "")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"https://{TOKEN}@github.com/o/r.git", "https://github.com/o/r.git"),
        (f"https://x-access-token:{TOKEN}@github.com/o/r", "https://github.com/o/r"),
        (f"http://u:{TOKEN}@h.example:8080/r", "http://h.example:8080/r"),
        (f"ssh://git:{TOKEN}@h.example/r", "ssh://git@h.example/r"),
        (f'"https://u:p@ss{TOKEN}@h.example/r"', '"https://h.example/r"'),
        ("git@github.com:o/r.git", "git@github.com:o/r.git"),
        ("https://github.com/o/r@v1", "https://github.com/o/r@v1"),
    ],
)
def test_url_credentials_are_stripped(url: str, expected: str) -> None:
    assert strip_url_credentials(url)[0] == expected


def test_url_sections_submodules_and_extra_headers_are_cleaned_too() -> None:
    config = (
        f'[url "https://{TOKEN}@github.com/"]\n\tinsteadOf = https://github.com/\n'
        f'[submodule "lib"]\n\turl = https://u:{TOKEN}@github.com/o/lib.git\n'
        f'[http "https://github.com/"]\n\textraheader = AUTHORIZATION: basic {TOKEN}\n'
        f"[http]\n\textraHeader = X-Token: a \\\n{TOKEN}\n\tsslVerify = true\n"
    )
    text, urls, headers = strip_git_config(config)
    assert TOKEN not in text
    assert (urls, headers) == (2, 2)
    assert '[url "https://github.com/"]' in text and "\tsslVerify = true\n" in text


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60), st.sampled_from(["https", "http", "git", "ftp"]))
def test_no_password_survives_in_any_url(prefix: str, scheme: str) -> None:
    text, _urls, _headers = strip_git_config(f"{prefix}\n\turl = {scheme}://user:{TOKEN}@host.example/r.git\n")
    assert TOKEN not in text


# -- the decision and its summary -------------------------------------------------------------


def test_the_decision_names_what_is_left_out_and_rewritten() -> None:
    paths = ["README.md", ".env", ".env.example", ".git-credentials", ".git/config", ".git/HEAD", "src/main.py"]
    decision = decide_project_copy(paths, {".git/config": GIT_CONFIG})
    assert decision.left_out == (".env", ".git-credentials")
    assert [p for p, _ in decision.rewritten] == [".git/config"]
    assert decision.summary() == (
        "left out of the image: .env, .git-credentials; stripped credentials from 1 remote URL in .git/config"
    )


def test_a_clean_project_is_a_plain_copy() -> None:
    clean = GIT_CONFIG.replace(f"alice:{TOKEN}@", "")
    decision = decide_project_copy(["README.md", ".git/config", ".env.example"], {".git/config": clean})
    assert decision == ProjectCopy() and decision.summary() is None


def test_a_long_list_is_cut_short_in_the_summary() -> None:
    decision = decide_project_copy([f"s{i}/.env" for i in range(9)], {})
    assert decision.summary() == "left out of the image: s0/.env, s1/.env, s2/.env, s3/.env, s4/.env, s5/.env and 3 more"


# -- the copy itself ------------------------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path) -> Path:
    proj = tmp_path / "proj"
    proj.mkdir()
    subprocess.run(["git", "init", "-q", str(proj)], check=True)
    subprocess.run(["git", "-C", str(proj), "remote", "add", "origin", f"https://alice:{TOKEN}@github.com/org/repo.git"],
                   check=True)
    (proj / "README.md").write_text("hello\n")
    (proj / ".env").write_text(f"GITHUB_TOKEN={TOKEN}\n")
    (proj / ".env.example").write_text("GITHUB_TOKEN=\n")
    (proj / ".git-credentials").write_text(f"https://alice:{TOKEN}@github.com\n")
    (proj / "app").mkdir()
    (proj / "app" / ".env.local").write_text(f"T={TOKEN}\n")
    (proj / "app" / "main.py").write_text("print('hi')\n")
    (proj / ".venv-like").mkdir()
    (proj / "link-to-readme").symlink_to("README.md")
    os.chmod(proj / ".git" / "config", 0o444)
    return proj


def everything(root: Path) -> bytes:
    return b"\n".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink())


def test_the_copy_has_the_project_without_its_credentials(project: Path, tmp_path: Path) -> None:
    before = everything(project)
    dest = tmp_path / "ctx" / "project"
    decision = copy_project(str(project), str(dest))
    assert decision.left_out == (".env", ".git-credentials", "app/.env.local")
    assert decision.summary() == (
        "left out of the image: .env, .git-credentials, app/.env.local; "
        "stripped credentials from 1 remote URL in .git/config"
    )
    assert TOKEN.encode() not in everything(dest)
    assert (dest / "README.md").read_text() == "hello\n" and (dest / "app" / "main.py").is_file()
    assert (dest / ".env.example").is_file() and (dest / ".venv-like").is_dir()
    assert os.readlink(dest / "link-to-readme") == "README.md"
    # git in the image still reads the repository, with the remote minus its credential.
    url = subprocess.run(["git", "-C", str(dest), "remote", "get-url", "origin"], capture_output=True, text=True, check=True)
    assert url.stdout.strip() == "https://github.com/org/repo.git"
    config = (dest / ".git" / "config").stat()
    original = (project / ".git" / "config").stat()
    assert stat.S_IMODE(config.st_mode) == 0o444 and config.st_mtime_ns == original.st_mtime_ns
    # The host's project is untouched.
    assert everything(project) == before


def test_the_survey_says_what_the_copy_does_and_writes_nothing(project: Path, tmp_path: Path) -> None:
    listing = sorted(project.rglob("*"))
    assert survey_project(str(project)) == copy_project(str(project), str(tmp_path / "copy"))
    assert sorted(project.rglob("*")) == listing


def test_the_dry_run_says_what_copy_cwd_leaves_out(project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("BOTTLE_RUNTIME", "docker")
    monkeypatch.delenv("BOTTLE_MANIFEST", raising=False)
    args = ["start", "claude", "--dry-run", "--manifest", CLAUDE, "--cwd", str(project)]
    result = CliRunner().invoke(cli, [*args, "--copy-cwd"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert (
        "note: --copy-cwd: left out of the image: .env, .git-credentials, app/.env.local; "
        "stripped credentials from 1 remote URL in .git/config"
    ) in result.stderr
    assert TOKEN not in result.output
    mounted = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert "left out of the image" not in mounted.stderr


def test_registry_and_cloud_credentials_stay_out_and_a_header_on_the_section_line_goes() -> None:
    from bottle.core.project_copy import is_credential_file, strip_git_config

    for path in (".npmrc", "web/.npmrc", ".pypirc", ".aws/credentials", "ops/.docker/config.json", ".kube/config"):
        assert is_credential_file(path), path
    for path in ("aws/credentials.md", "docker/config.json", "config.json", ".aws/config"):
        assert not is_credential_file(path), path
    text, _, headers = strip_git_config('[http] extraheader = AUTHORIZATION: basic eDp5\n\tsslVerify = true\n')
    assert headers == 1 and "AUTHORIZATION" not in text
    assert text.splitlines() == ["[http]", "\tsslVerify = true"]
