"""What ``--copy-cwd`` leaves out of the image: credentials never go into a layer.

``--copy-cwd`` copies the project into an image layer, and anyone who can
read the image (``docker save``, a registry) can read the layer. A project
directory often holds credentials that have no business there: a
``.git-credentials`` or ``.netrc``, a ``.env``, an SSH key, and remote URLs
in ``.git/config`` like ``https://user:token@host/org/repo.git`` (or an
``http.extraHeader`` with an ``Authorization`` header, as CI checkouts
write). ``decide_project_copy`` says, from the list of paths and the text
of each git config file, which files stay out and what each config file
becomes; ``ProjectCopy.summary`` is the line the preflight shows. The
adapter (``bottle.adapters.local.project_copy``) reads and copies.

The agent loses nothing it should have: pushes go through the git gate
with the gate's own credential, and the host's project is untouched.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Mapping

import msgspec

__all__ = [
    "CREDENTIAL_FILES",
    "ENV_TEMPLATES",
    "ProjectCopy",
    "decide_project_copy",
    "is_credential_file",
    "is_git_config",
    "strip_git_config",
    "strip_url_credentials",
]

# Files whose only job is to hold a credential, by name, at any depth.
CREDENTIAL_FILES = frozenset({
    ".git-credentials",
    ".netrc",
    "_netrc",  # .netrc's name on Windows
    ".pgpass",
    ".env",
    # SSH private keys under their default names (never the .pub halves).
    "id_rsa",
    "id_dsa",
    "id_ecdsa",
    "id_ed25519",
    "id_ecdsa_sk",
    "id_ed25519_sk",
    # Package-registry tokens: npm's and PyPI's upload credentials.
    ".npmrc",
    ".pypirc",
})
# Credential files known by their directory as well as their name.
CREDENTIAL_PATHS = (".aws/credentials", ".docker/config.json", ".kube/config")
# ``.env.<anything>`` is left out too, except these templates (meant to be committed).
ENV_TEMPLATES = frozenset({".env.example", ".env.sample", ".env.template"})

_GIT_CONFIG_NAMES = ("config", "config.worktree")
# scheme://userinfo@ — greedy up to the last '@' before the path, as curl reads it.
_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://(?P<userinfo>[^/\s\"\\]*)@")
# Schemes where the user name is an account, not a secret (ssh://git@host): only a password goes.
_KEEP_USER = frozenset({"ssh", "git+ssh", "ssh+git"})
# ``extraheader = ...`` on its own line, or after a section header on the same line.
_EXTRA_HEADER = re.compile(r"^\s*(?P<section>\[[^\]]*\])?\s*extraheader\s*(?:=|$)", re.IGNORECASE)


class ProjectCopy(msgspec.Struct, frozen=True):
    """What the copy of a project does differently from a plain copy.

    ``left_out``: relative paths not copied. ``rewritten``: (relative path,
    new text) of each git config file that held credentials.
    ``stripped_urls``: URLs whose user or password was removed;
    ``dropped_headers``: ``http.extraHeader`` entries removed.
    """

    left_out: tuple[str, ...] = ()
    rewritten: tuple[tuple[str, str], ...] = ()
    stripped_urls: int = 0
    dropped_headers: int = 0

    def summary(self, limit: int = 6) -> str | None:
        """One line for the preflight, or None when the copy is a plain copy.

        ``left out of the image: .env, .git-credentials; stripped credentials
        from 1 remote URL in .git/config``. At most ``limit`` paths are named.
        """
        parts: list[str] = []
        if self.left_out:
            shown = ", ".join(self.left_out[:limit])
            more = len(self.left_out) - limit
            parts.append(f"left out of the image: {shown}" + (f" and {more} more" if more > 0 else ""))
        where = ", ".join(path for path, _ in self.rewritten)
        if self.stripped_urls:
            plural = "" if self.stripped_urls == 1 else "s"
            parts.append(f"stripped credentials from {self.stripped_urls} remote URL{plural} in {where}")
        if self.dropped_headers:
            plural = "" if self.dropped_headers == 1 else "s"
            parts.append(f"removed {self.dropped_headers} http.extraHeader setting{plural} from {where}")
        return "; ".join(parts) or None


def is_credential_file(relpath: str) -> bool:
    """Whether the file at ``relpath`` (``/``-separated) stays out of the image, by its name alone.

    ``.git-credentials``, ``.netrc``/``_netrc``, ``.pgpass``, ``.env`` and
    ``.env.*`` (except ``.env.example``, ``.env.sample``, ``.env.template``)
    SSH private keys under their default names, ``.npmrc``, ``.pypirc``,
    ``.aws/credentials``, ``.docker/config.json`` and ``.kube/config``, at any depth. A
    directory of such a name is not a file and is copied.
    """
    name = posixpath.basename(relpath)
    if name in CREDENTIAL_FILES:
        return True
    if any(relpath == p or relpath.endswith("/" + p) for p in CREDENTIAL_PATHS):
        return True
    return name.startswith(".env.") and name not in ENV_TEMPLATES


def is_git_config(relpath: str) -> bool:
    """Whether ``relpath`` is a repository's config: ``.git/config``, a submodule's or a worktree's, at any depth."""
    parts = relpath.split("/")
    if ".git" not in parts or parts[-1] not in _GIT_CONFIG_NAMES:
        return False
    rest = parts[len(parts) - 1 - parts[::-1].index(".git") + 1:]
    return len(rest) == 1 or (len(rest) >= 3 and rest[0] in ("modules", "worktrees"))


def strip_url_credentials(text: str) -> tuple[str, int]:
    """``text`` with the user and password removed from every ``scheme://user:pass@`` URL; and how many changed.

    For ssh URLs only the password goes (``ssh://git@host`` names an
    account); for every other scheme the whole user part goes, since a token
    is often the user name (``https://<token>@github.com``).
    """
    count = 0

    def fix(match: re.Match[str]) -> str:
        nonlocal count
        scheme, userinfo = match.group("scheme"), match.group("userinfo")
        if scheme.lower() in _KEEP_USER:
            user, sep, _password = userinfo.partition(":")
            if not sep:
                return match.group(0)
            count += 1
            return f"{scheme}://{user}@"
        count += 1
        return f"{scheme}://"

    return _URL_USERINFO.sub(fix, text), count


def strip_git_config(text: str) -> tuple[str, int, int]:
    """A git config file without credentials: (new text, URLs stripped, ``extraHeader`` entries removed).

    Every URL (remote ``url``/``pushurl``, submodule URLs, ``[url "..."]``
    and ``[credential "..."]`` section names) loses its user information
    (``strip_url_credentials``); every ``extraheader`` entry is removed with
    its continuation lines. Everything else is kept byte for byte.
    """
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    headers = 0
    skipping = False
    for line in lines:
        if skipping:
            skipping = line.rstrip("\r\n").endswith("\\")
            continue
        header = _EXTRA_HEADER.match(line)
        if header:
            headers += 1
            skipping = line.rstrip("\r\n").endswith("\\")
            if header.group("section"):
                out.append(header.group("section") + "\n")  # the section goes on; only its header entry goes
            continue
        out.append(line)
    stripped, urls = strip_url_credentials("".join(out))
    return stripped, urls, headers


def decide_project_copy(paths: Iterable[str], git_configs: Mapping[str, str]) -> ProjectCopy:
    """What to leave out of and rewrite in a copy of the project.

    ``paths`` are the project's files (and symbolic links), relative and
    ``/``-separated; ``git_configs`` maps each git config file among them
    (``is_git_config``) to its text. Left out: ``is_credential_file``.
    Rewritten: each git config whose text ``strip_git_config`` changes.
    """
    left_out = sorted({p for p in paths if is_credential_file(p)})
    rewritten: list[tuple[str, str]] = []
    urls = headers = 0
    for path in sorted(git_configs):
        if not is_git_config(path) or path in left_out:
            continue
        text, n_urls, n_headers = strip_git_config(git_configs[path])
        if text != git_configs[path]:
            rewritten.append((path, text))
            urls += n_urls
            headers += n_headers
    return ProjectCopy(tuple(left_out), tuple(rewritten), urls, headers)
