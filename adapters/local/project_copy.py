"""Copying the project for ``--copy-cwd`` without the credentials ``bottle.core.project_copy`` picks out.

``survey_project`` says what a copy would leave out and rewrite (for the
preflight); ``copy_project`` makes the copy in the build context. Both walk
the project without following symbolic links; links are copied as links.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

from bottle.core.project_copy import ProjectCopy, decide_project_copy, is_git_config

__all__ = ["copy_project", "survey_project"]


def _entries(src: str) -> Iterator[str]:
    """Every file and symbolic link under ``src``, relative and ``/``-separated."""
    for dirpath, dirnames, filenames in os.walk(src):
        rel = os.path.relpath(dirpath, src)
        prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        for name in filenames:
            yield prefix + name
        for name in dirnames:
            if os.path.islink(os.path.join(dirpath, name)):
                yield prefix + name


def _read_text(path: str) -> str | None:
    # Only a regular file is rewritten; a link stays a link (its target is not copied).
    if os.path.islink(path) or not os.path.isfile(path):
        return None
    with open(path, "rb") as fh:
        return fh.read().decode("utf-8", "surrogateescape")


def survey_project(src: str) -> ProjectCopy:
    """What ``copy_project(src, ...)`` would leave out and rewrite; reads the git config files, writes nothing."""
    paths = list(_entries(src))
    configs: dict[str, str] = {}
    for path in paths:
        if is_git_config(path):
            text = _read_text(os.path.join(src, *path.split("/")))
            if text is not None:
                configs[path] = text
    return decide_project_copy(paths, configs)


def copy_project(src: str, dest: str) -> ProjectCopy:
    """Copy the project ``src`` to ``dest`` (which must not exist) minus its credentials; what was left out.

    Like ``shutil.copytree(src, dest, symlinks=True)``, except that the
    files ``bottle.core.project_copy`` leaves out are not copied and each
    git config holding credentials is written without them (keeping the
    original's mode and times, so the build cache sees the same input on
    the next launch). The host's project is not touched.
    """
    decision = survey_project(src)
    skip = frozenset(decision.left_out)

    def ignore(dirpath: str, names: list[str]) -> set[str]:
        rel = os.path.relpath(dirpath, src)
        prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        return {name for name in names if prefix + name in skip}

    shutil.copytree(src, dest, symlinks=True, ignore=ignore)
    for relpath, text in decision.rewritten:
        target = os.path.join(dest, *relpath.split("/"))
        original = os.stat(os.path.join(src, *relpath.split("/")))
        os.unlink(target)  # the copy might be read-only, like its original
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(text.encode("utf-8", "surrogateescape"))
        os.chmod(target, original.st_mode & 0o7777)
        os.utime(target, ns=(original.st_atime_ns, original.st_mtime_ns))
    return decision
