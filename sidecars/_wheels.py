"""Build contexts for the sidecar images, with their Python dependencies as wheels.

Builds run where no package index may be reachable from inside a container
(and behind corporate TLS proxies, pip in a container fails TLS
verification). So the host downloads the wheels — with the host's own pip,
which honours its pip config, certificates and proxies — and the
Dockerfile installs them with ``pip install --no-index``. Nothing in a
sidecar image is fetched during the build.

``sidecar_build_contexts`` is what ``bottle images build`` calls:

    builds = sidecar_build_contexts(work_dir, cache_dir=..., on_progress=...)
    for b in builds:
        runtime.build_image(b.request(sidecar_image_tag(b.role, version), base, labels))

The wheels are cached under ``cache_dir`` by a key of what was asked for
(requirements and target platform), so only the first build downloads.

The other way, for users whose builds can reach an index through a
corporate TLS proxy: pass the proxy's CA into the build (a build secret or
a build-arg URL of a private index) and ``pip install`` there. Never bake
such a CA into an image that ships; bottle does not take that route itself.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bottle.core.images import BASE_ARG
from bottle.ports.errors import BottleError
from bottle.ports.runtime import BuildRequest, ProgressCallback, ProgressEvent

# What runs in the sidecar images. mitmproxy 11.0 is the last line that
# supports Python 3.11 (Debian bookworm's python3).
SIDECAR_REQUIREMENTS = (
    "mitmproxy>=11.0.2,<11.1",
    "msgspec>=0.19,<0.23",
    "pyyaml>=6,<7",
    # The guard's lookups: glibc's getaddrinfo does not tell an answer's TTL.
    "dnspython>=2.6,<3",
)
# Dependencies PyPI has only as source: built into (pure Python) wheels on
# the host, so the container never builds anything. mitmproxy 11.0.2 pins
# pyperclip to exactly this version.
SDIST_ONLY = ("pyperclip==1.9.0",)

@dataclass(frozen=True)
class SidecarRecipe:
    """How sidecars/Dockerfile builds one sidecar image: its build arguments."""

    entry: str  # the module the image runs
    pip_install: str = "msgspec"  # what pip installs from wheels/: a name, or "-r <file>"
    apt_packages: str = ""  # from the base distribution's mirror
    shared_dirs: str = ""  # made writable by any uid, sticky

    def build_args(self, role: str) -> dict[str, str]:
        return {
            "ROLE": role,
            "ENTRY": self.entry,
            "PIP_INSTALL": self.pip_install,
            "APT_PACKAGES": self.apt_packages,
            "SHARED_DIRS": self.shared_dirs,
        }


_ALL_WHEELS = "-r /opt/bottle/wheels/requirements.txt"
SIDECAR_RECIPES = {
    "guard": SidecarRecipe("bottle.sidecars.guard.entrypoint", _ALL_WHEELS),
    "egress-proxy": SidecarRecipe("bottle.sidecars.egress_proxy.entrypoint", _ALL_WHEELS),
    # git from the distribution; the repositories' root is shared because the
    # launcher may run the gate as the host user's uid.
    "git-gate": SidecarRecipe("bottle.sidecars.git_gate.entrypoint", apt_packages="git ca-certificates", shared_dirs="/srv/git"),
    "supervise": SidecarRecipe("bottle.sidecars.supervise.server"),
}
SIDECARS = tuple(SIDECAR_RECIPES)
SIDECAR_DOCKERFILE = "lib/bottle/sidecars/Dockerfile"
LIB_PACKAGES = ("core", "ports", "sidecars")
_SKIP_DIRS = {"__pycache__", ".pytest_cache", ".mypy_cache"}


class WheelDownloadFailed(BottleError):
    """pip on the host could not fetch the sidecars' wheels."""


@dataclass(frozen=True)
class WheelTarget:
    """The Python the wheels are for: the sidecar base image's."""

    python_version: str = "3.11"
    machine: str = "x86_64"
    # Highest glibc of the base (bookworm: 2.36); older manylinux wheels fit too.
    glibc: tuple[int, int] = (2, 36)

    @classmethod
    def for_host(cls) -> WheelTarget:
        """Debian bookworm on the host's CPU architecture (images run on the host's engine)."""
        machine = platform.machine().lower()
        return cls(machine={"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine))

    def platforms(self) -> list[str]:
        tags = [f"manylinux_{self.glibc[0]}_{minor}_{self.machine}" for minor in range(self.glibc[1], 16, -1)]
        tags += [f"manylinux2014_{self.machine}"]
        if self.machine in ("x86_64", "i686"):
            tags += [f"manylinux2010_{self.machine}", f"manylinux1_{self.machine}", f"manylinux_2_5_{self.machine}"]
        return tags

    def abi(self) -> str:
        return "cp" + self.python_version.replace(".", "")

    def key(self, requirements: Sequence[str], sdists: Sequence[str]) -> str:
        text = "\n".join([self.python_version, self.machine, f"{self.glibc}", *requirements, "--", *sdists])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class SidecarBuild:
    """One image to build: ``dockerfile`` is relative to ``context_dir``."""

    role: str
    context_dir: str
    dockerfile: str
    build_args: Mapping[str, str] = field(default_factory=dict)

    def request(self, tag: str, base: str, labels: Mapping[str, str]) -> BuildRequest:
        """The build of this sidecar as ``tag`` on ``base``, carrying ``labels``."""
        return BuildRequest(
            context_dir=self.context_dir, dockerfile=self.dockerfile, tag=tag,
            build_args={BASE_ARG: base, **self.build_args}, labels=dict(labels),
        )


def pip_download_argv(
    python: str,
    dest: str,
    target: WheelTarget,
    requirements: Sequence[str],
    find_links: Sequence[str] = (),
) -> list[str]:
    """``pip download`` of binary wheels for ``target`` (with pip itself, to run the install)."""
    argv = [python, "-m", "pip", "download", "--disable-pip-version-check", "--only-binary=:all:", "--dest", dest]
    argv += ["--python-version", target.python_version, "--implementation", "cp"]
    for abi in (target.abi(), "abi3", "none"):
        argv += ["--abi", abi]
    for tag in target.platforms():
        argv += ["--platform", tag]
    for link in find_links:
        argv += ["--find-links", link]
    return argv + [*requirements, "pip"]


def pip_wheel_argv(python: str, dest: str, requirements: Sequence[str]) -> list[str]:
    """``pip wheel`` of source-only packages (pure Python) without their dependencies."""
    return [python, "-m", "pip", "wheel", "--disable-pip-version-check", "--no-deps", "--wheel-dir", dest, *requirements]


Runner = Callable[[list[str]], "subprocess.CompletedProcess[str]"]


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def _progress(on_progress: ProgressCallback | None, message: str) -> None:
    if on_progress is not None:
        on_progress(ProgressEvent(message))


def _check(result: subprocess.CompletedProcess[str], what: str) -> None:
    if result.returncode != 0:
        tail = [line for line in (result.stderr or result.stdout or "").splitlines() if line.strip()][-5:]
        raise WheelDownloadFailed(
            f"{what} failed: {tail[-1] if tail else f'pip exited with {result.returncode}'}",
            hint=(
                "the host's pip must reach a package index (check `pip config list`, PIP_INDEX_URL, "
                "PIP_CERT and proxy settings); the wheels are then cached and builds work offline"
            ),
        )


def ensure_wheels(
    cache_dir: str,
    *,
    target: WheelTarget | None = None,
    python: str | None = None,
    run: Runner = _run,
    on_progress: ProgressCallback | None = None,
) -> str:
    """A directory of every wheel the sidecars need, plus ``requirements.txt``; downloaded once, then cached.

    Raises ``WheelDownloadFailed`` with pip's last line when pip fails.
    """
    target = target or WheelTarget.for_host()
    python = python or sys.executable
    final = Path(cache_dir) / "sidecar-wheels" / target.key(SIDECAR_REQUIREMENTS, SDIST_ONLY)
    if (final / "COMPLETE").is_file():
        _progress(on_progress, f"sidecar wheels: cached in {final}")
        return str(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".download-", dir=final.parent))
    try:
        sdist_wheels = work / "built"
        wheels = work / "wheels"
        sdist_wheels.mkdir()
        wheels.mkdir()
        if SDIST_ONLY:
            _progress(on_progress, f"sidecar wheels: building {', '.join(SDIST_ONLY)} on the host")
            _check(run(pip_wheel_argv(python, str(sdist_wheels), SDIST_ONLY)), "pip wheel")
        _progress(on_progress, f"sidecar wheels: downloading for Python {target.python_version} on {target.machine}")
        argv = pip_download_argv(python, str(wheels), target, SIDECAR_REQUIREMENTS, [str(sdist_wheels)])
        _check(run(argv), "pip download")
        for built in sdist_wheels.glob("*.whl"):
            shutil.copy2(built, wheels / built.name)
        (wheels / "requirements.txt").write_text("\n".join(SIDECAR_REQUIREMENTS) + "\n")
        names = sorted(p.name for p in wheels.iterdir())
        if not any(n.startswith("pip-") for n in names):
            raise WheelDownloadFailed("pip download did not fetch pip itself", hint="retry `bottle images build`")
        (wheels / "COMPLETE").write_text("\n".join(names) + "\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(wheels, final)
        _progress(on_progress, f"sidecar wheels: {len(names) - 1} files in {final}")
        return str(final)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _package_dir(name: str) -> Path:
    import importlib

    module = importlib.import_module(f"bottle.{name}")
    return Path(next(iter(module.__path__)))


def copy_lib(dest: str) -> str:
    """Copy bottle.core, bottle.ports and bottle.sidecars (sources and Dockerfiles) to ``dest/bottle``."""
    root = Path(dest) / "bottle"
    for name in LIB_PACKAGES:
        src = _package_dir(name)
        shutil.copytree(
            src,
            root / name,
            ignore=lambda d, names: [n for n in names if n in _SKIP_DIRS or n.endswith((".pyc", ".pyo"))],
            dirs_exist_ok=True,
        )
    return str(root)


def sidecar_build_contexts(
    work_dir: str,
    *,
    cache_dir: str,
    roles: Sequence[str] = tuple(SIDECARS),
    target: WheelTarget | None = None,
    python: str | None = None,
    run: Runner = _run,
    on_progress: ProgressCallback | None = None,
) -> list[SidecarBuild]:
    """Assemble one build context under ``work_dir`` for the sidecar images of ``roles``.

    The context holds ``wheels/`` (from ``ensure_wheels``, cached in
    ``cache_dir``) and ``lib/bottle/{core,ports,sidecars}``; every image builds from
    ``lib/bottle/sidecars/Dockerfile`` in it with its recipe's build
    arguments and ``BASE`` (``SidecarBuild.request``). ``work_dir`` must be empty or
    missing; the caller removes it after the builds.
    """
    unknown = [r for r in roles if r not in SIDECARS]
    if unknown:
        raise ValueError(f"no sidecar image named {', '.join(unknown)}; known: {', '.join(SIDECARS)}")
    context = Path(work_dir)
    context.mkdir(parents=True, exist_ok=True)
    wheels = ensure_wheels(cache_dir, target=target, python=python, run=run, on_progress=on_progress)
    shutil.copytree(wheels, context / "wheels", dirs_exist_ok=True)
    copy_lib(str(context / "lib"))
    _progress(on_progress, f"sidecar build context ready in {context}")
    return [
        SidecarBuild(role, str(context), SIDECAR_DOCKERFILE, SIDECAR_RECIPES[role].build_args(role))
        for role in roles
    ]
