"""What every adapter checks of a ``ContainerSpec.seccomp_profile`` before handing it to its engine."""

from __future__ import annotations

import json
from collections.abc import Callable

from bottle.ports.errors import EngineError
from bottle.ports.runtime import ContainerSpec, EngineInfo


def check_profile(spec: ContainerSpec, engine: Callable[[], EngineInfo]) -> None:
    """``EngineError`` unless the engine has seccomp and the profile is a JSON object with a ``defaultAction``.

    Both engines read a profile with neither a default action nor rules as
    "no seccomp at all" (Docker runs such a container unconfined), so the
    port's promise (the profile or an error, never less) starts here.
    ``engine`` describes the engine (asked only when there is a profile).
    """
    if spec.seccomp_profile is None:
        return
    try:
        profile = json.loads(spec.seccomp_profile or "")
    except ValueError as exc:
        raise EngineError(
            f"create container {spec.name}: its seccomp profile is not JSON",
            hint="bottle renders profiles with bottle.core.seccomp.render_profile",
            engine_message=str(exc),
        ) from exc
    if not isinstance(profile, dict) or not isinstance(profile.get("defaultAction"), str) or not profile["defaultAction"]:
        raise EngineError(
            f"create container {spec.name}: its seccomp profile has no defaultAction; "
            "an engine would run the container without any filter",
            hint="bottle renders profiles with bottle.core.seccomp.render_profile",
        )
    info = engine()
    if not info.seccomp:
        raise EngineError(
            f"create container {spec.name}: {info.runtime} at {info.address} cannot apply a seccomp profile "
            "(it reports seccomp as unavailable)",
            hint="use an engine on a kernel with seccomp; bottle never runs a container under the engine's "
            "default profile instead of its own",
        )
