"""Find and read manifest files; the core parses and merges what is read here.

Layers, later overriding earlier (a whole agent replaces one of the same name):

1. user:     ``$XDG_CONFIG_HOME/bottle/bottle.json`` and ``.../bottle/agents/*.md``
2. project:  ``<cwd>/bottle.json`` and ``<cwd>/.bottle/agents/*.md``
3. explicit: ``--manifest PATH`` / ``BOTTLE_MANIFEST``: a ``.json`` file, a
             ``.md`` agent file, or a directory (its ``bottle.json`` and ``*.md``)
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from bottle.core.errors import DOCUMENT, ManifestError
from bottle.core.manifest import Agent, Manifest
from bottle.core.manifest_load import ManifestText, load_manifest
from bottle.core.plan import secret_uses
from bottle.ports.errors import InputError
from bottle.ports.secrets import SecretSource

JSON_NAME = "bottle.json"
MARKDOWN_SUFFIXES = (".md", ".markdown")


def user_config_dir(environ: Mapping[str, str]) -> str:
    """``$XDG_CONFIG_HOME/bottle`` when set (absolute), else platformdirs' user config dir."""
    xdg = environ.get("XDG_CONFIG_HOME", "")
    if xdg and os.path.isabs(xdg):
        return os.path.join(xdg, "bottle")
    import platformdirs  # noqa: PLC0415

    return platformdirs.user_config_dir("bottle")


def _kind(path: str) -> str:
    return "markdown" if path.lower().endswith(MARKDOWN_SUFFIXES) else "json"


def read_source(path: str) -> ManifestText:
    """Read one manifest file; ``InputError`` / ``ManifestError`` naming it if that fails."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise InputError(f"manifest {path} does not exist", hint="check --manifest / BOTTLE_MANIFEST") from None
    except IsADirectoryError:
        raise InputError(f"manifest {path} is a directory, expected a file") from None
    except OSError as exc:
        raise InputError(f"cannot read manifest {path}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(path, DOCUMENT, f"expected UTF-8 text (bad byte at offset {exc.start})") from None
    return ManifestText(text=text, source=path, base_dir=os.path.dirname(os.path.abspath(path)), kind=_kind(path))


def _markdown_files(directory: str) -> list[str]:
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    except NotADirectoryError:
        return []
    except OSError as exc:
        raise InputError(f"cannot list agent files in {directory}: {exc.strerror}") from None
    return [
        os.path.join(directory, n)
        for n in names
        if n.lower().endswith(MARKDOWN_SUFFIXES) and os.path.isfile(os.path.join(directory, n))
    ]


def _level(json_path: str, agents_dir: str) -> list[ManifestText]:
    sources = []
    if os.path.isfile(json_path):
        sources.append(read_source(json_path))
    sources.extend(read_source(p) for p in _markdown_files(agents_dir))
    return sources


def _explicit(path: str) -> list[ManifestText]:
    if os.path.isdir(path):
        sources = _level(os.path.join(path, JSON_NAME), path)
        if not sources:
            raise InputError(
                f"manifest directory {path} holds no {JSON_NAME} and no *.md agent files",
                hint="point --manifest at a .json file, a .md agent file or a directory of them",
            )
        return sources
    return [read_source(path)]


def manifest_layers(cwd: str, explicit: str | None, environ: Mapping[str, str]) -> list[list[ManifestText]]:
    """Read every manifest source, grouped in layers, earliest (weakest) first."""
    config = user_config_dir(environ)
    layers = [
        _level(os.path.join(config, JSON_NAME), os.path.join(config, "agents")),
        _level(os.path.join(cwd, JSON_NAME), os.path.join(cwd, ".bottle", "agents")),
    ]
    if explicit:
        layers.append(_explicit(explicit))
    return layers


def load_manifest_files(cwd: str, explicit: str | None, environ: Mapping[str, str] | None = None) -> Manifest:
    """The merged manifest for a command run in ``cwd`` with ``--manifest explicit``."""
    return load_manifest(manifest_layers(cwd, explicit, os.environ if environ is None else environ))


def secret_presence(agent: Agent, source: SecretSource, home: str | None = None) -> dict[str, bool]:
    """Whether each secret ``agent`` refers to exists, by normalised token_ref (never reads it out)."""
    home = os.path.expanduser("~") if home is None else home
    presence = {}
    for use in secret_uses(agent):
        name = use.name
        if use.kind == "file" and (name == "~" or name.startswith("~/")):
            name = home + name[1:]
        presence[use.ref] = source.present(use.kind, name)
    return presence
