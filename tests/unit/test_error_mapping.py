"""map_docker_errors / map_podman_errors turn SDK exceptions into bottle's own, keeping the engine's words."""

from __future__ import annotations

import json

import docker.errors
import podman.errors
import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from bottle.adapters.docker.errors import docker_error, map_docker_errors
from bottle.adapters.podman.errors import map_podman_errors, podman_error
from bottle.ports.errors import (
    BuildFailed,
    EngineError,
    EngineUnreachable,
    NameConflict,
    NotFound,
    PermissionDenied,
    RuntimeFailure,
)


def _response(status: int, body: str = "") -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = body.encode()
    response.reason = "reason"
    return response


def _docker_api_error(cls: type, status: int, explanation: str) -> Exception:
    return cls("boom", response=_response(status, json.dumps({"message": explanation})), explanation=explanation)


def _podman_api_error(cls: type, status: int, message: str) -> Exception:
    return cls(message, response=_response(status, json.dumps({"cause": message, "message": message})), explanation=message)


def _raised_through(manager, exc: BaseException) -> BaseException:
    with pytest.raises(RuntimeFailure) as caught:
        with manager:
            raise exc
    return caught.value


def _connection_refused() -> requests.exceptions.ConnectionError:
    try:
        try:
            raise FileNotFoundError(2, "No such file or directory")
        except FileNotFoundError as inner:
            raise requests.exceptions.ConnectionError(inner) from inner
    except requests.exceptions.ConnectionError as outer:
        return outer


class TestDockerMapping:
    @pytest.mark.parametrize(
        ("exc", "expected"),
        [
            (_docker_api_error(docker.errors.NotFound, 404, "No such container: x"), NotFound),
            (_docker_api_error(docker.errors.ImageNotFound, 404, "No such image: y"), NotFound),
            (_docker_api_error(docker.errors.APIError, 403, "forbidden"), PermissionDenied),
            (_docker_api_error(docker.errors.APIError, 500, "driver failed"), EngineError),
            (_docker_api_error(docker.errors.APIError, 409, "container is running: stop it first"), EngineError),
        ],
    )
    def test_status_decides_the_type_and_the_engine_message_survives(self, exc, expected):
        error = _raised_through(map_docker_errors("do a thing"), exc)
        assert type(error) is expected
        assert error.engine_message == exc.explanation
        assert error.__cause__ is exc
        assert "do a thing" in str(error)

    def test_409_on_create_is_a_name_conflict(self):
        exc = _docker_api_error(docker.errors.APIError, 409, 'Conflict. The container name "/a" is already in use')
        assert type(docker_error(exc, "create container a", creating=True)) is NameConflict
        assert type(docker_error(exc, "rename container a")) is NameConflict  # the words say so too

    def test_a_missing_socket_means_unreachable_with_a_hint_to_start_dockerd(self):
        error = _raised_through(map_docker_errors("list containers", address="unix:///nope.sock"), _connection_refused())
        assert type(error) is EngineUnreachable
        assert "dockerd" in (error.hint or "")
        assert "unix:///nope.sock" in str(error)

    def test_version_probe_failure_at_connect_means_unreachable(self):
        exc = docker.errors.DockerException("Error while fetching server API version: ('Connection aborted.', FileNotFoundError(2, 'No such file or directory'))")
        assert type(docker_error(exc, "connect to Docker")) is EngineUnreachable

    def test_build_error_keeps_the_last_twenty_lines(self):
        log = [{"stream": f"line {n}\n"} for n in range(30)] + [{"error": "RUN failed: exit 3"}]
        error = docker_error(docker.errors.BuildError("RUN failed: exit 3", log), "build image t")
        assert type(error) is BuildFailed
        assert len(error.log_tail) == 20
        assert error.log_tail[-1] == "RUN failed: exit 3"

    def test_a_read_timeout_is_an_engine_error_not_unreachable(self):
        error = docker_error(requests.exceptions.ReadTimeout("read timed out"), "wait for container c")
        assert type(error) is EngineError

    def test_our_errors_and_programming_errors_pass_through(self):
        ours = NotFound("already ours")
        with pytest.raises(NotFound) as caught, map_docker_errors("x"):
            raise ours
        assert caught.value is ours
        with pytest.raises(ValueError), map_docker_errors("x"):
            raise ValueError("a bug, not the engine")


class TestPodmanMapping:
    def test_image_not_found_is_not_a_podman_not_found_but_is_ours(self):
        exc = _podman_api_error(podman.errors.ImageNotFound, 404, "image not known")
        assert not isinstance(exc, podman.errors.NotFound)
        error = _raised_through(map_podman_errors("inspect image i"), exc)
        assert type(error) is NotFound
        assert error.engine_message == "image not known"

    @pytest.mark.parametrize(
        ("status", "message", "expected"),
        [
            (404, "no container with name or ID x found: no such container", NotFound),
            (500, "localhost/missing:1: image not known", NotFound),
            (500, "unable to find network with name or ID n: network not found", NotFound),
            (500, 'the container name "a" is already in use by 1234', NameConflict),
            (409, "network name n already used: network already exists", NameConflict),
            (403, "permission denied", PermissionDenied),
            (500, "OCI runtime error: crun: cgroups in hybrid mode not supported", EngineError),
        ],
    )
    def test_status_and_words_decide_the_type(self, status, message, expected):
        exc = _podman_api_error(podman.errors.APIError, status, message)
        error = _raised_through(map_podman_errors("do it", creating=True), exc)
        assert type(error) is expected
        assert error.engine_message == message
        assert error.__cause__ is exc

    def test_a_dead_socket_means_unreachable_with_a_hint_to_start_the_service(self):
        try:
            try:
                raise _connection_refused()
            except requests.exceptions.ConnectionError as inner:
                raise podman.errors.APIError("http://x/v5/libpod/info", explanation="GET operation failed") from inner
        except podman.errors.APIError as outer:
            exc = outer
        error = podman_error(exc, "ask Podman for its version", address="unix:///run/user/1001/podman/podman.sock")
        assert type(error) is EngineUnreachable
        assert "podman system service" in (error.hint or "")
        assert "unix:///run/user/1001/podman/podman.sock" in (error.hint or "")

    def test_build_error_keeps_the_tail_of_the_log(self):
        log = [json.dumps({"stream": f"step {n}\n"}).encode() for n in range(25)]
        error = podman_error(podman.errors.BuildError("exit status 3", log), "build image t")
        assert type(error) is BuildFailed
        assert error.log_tail == tuple(f"step {n}" for n in range(5, 25))


@given(status=st.integers(min_value=400, max_value=599), message=st.text(min_size=1, max_size=200).filter(str.strip))
def test_any_http_failure_maps_to_a_runtime_failure_that_keeps_the_words(status, message):
    for exc, mapper in (
        (_docker_api_error(docker.errors.APIError, status, message), docker_error),
        (_podman_api_error(podman.errors.APIError, status, message), podman_error),
    ):
        error = mapper(exc, "act")
        assert isinstance(error, RuntimeFailure)
        assert error.engine_message == message
        assert error.hint
