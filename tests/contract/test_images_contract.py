"""Images: build with a build ARG and a context, labels, progress, failures, import."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator

import pytest

from bottle.ports.errors import BuildFailed
from bottle.ports.runtime import BuildRequest, ContainerSpec, ProgressEvent
from contract_support import RUN_ID

FULL_DOCKERFILE = """\
ARG BASE=localhost/bottle-base:bookworm
FROM ${BASE}
ARG GREETING=unset
COPY context.txt /opt/bottle/context.txt
RUN echo "$GREETING" > /opt/bottle/greeting.txt
"""

STATIC_DOCKERFILE = """\
ARG BASE=localhost/bottle-base:bookworm
FROM ${BASE}
COPY context.txt /opt/bottle/context.txt
LABEL io.bottle.from-dockerfile=yes
"""


@pytest.fixture
def tag(names, backdoor) -> Iterator[str]:
    ref = f"localhost/{names('img')}:contract"
    yield ref
    backdoor.remove_image(ref)


def _context(tmp_path, dockerfile: str) -> str:
    (tmp_path / "Dockerfile").write_text(dockerfile)
    (tmp_path / "context.txt").write_text(f"from the context {RUN_ID}\n")
    return str(tmp_path)


class TestBuildContract:
    def test_build_uses_the_arg_and_the_context_and_carries_our_labels(self, runtime, backdoor, tmp_path, tag, labels, make_container, needs_processes):
        events: list[ProgressEvent] = []
        request = BuildRequest(context_dir=_context(tmp_path, FULL_DOCKERFILE), tag=tag, build_args={"GREETING": f"hello-{RUN_ID}"}, labels=labels)
        image = runtime.build_image(request, on_progress=events.append)

        assert events and any(event.step is not None for event in events)
        seen = backdoor.image(tag)
        assert seen is not None and tag in seen["tags"]
        assert seen["labels"].items() >= labels.items()
        assert image.labels.items() >= labels.items()

        name = make_container(image=tag)
        assert runtime.exec(name, ["cat", "/opt/bottle/greeting.txt"]).stdout == f"hello-{RUN_ID}\n".encode()
        assert runtime.exec(name, ["cat", "/opt/bottle/context.txt"]).stdout == f"from the context {RUN_ID}\n".encode()

    def test_build_without_run_steps_tags_labels_and_reports_progress(self, runtime, backdoor, tmp_path, tag, labels):
        events: list[ProgressEvent] = []
        image = runtime.build_image(BuildRequest(context_dir=_context(tmp_path, STATIC_DOCKERFILE), tag=tag, labels=labels), on_progress=events.append)
        assert len(events) >= 4
        seen = backdoor.image(tag)
        assert seen["labels"].items() >= {**labels, "io.bottle.from-dockerfile": "yes"}.items()
        assert runtime.image_exists(tag)
        assert image.id in {found.id for found in runtime.list_images(labels)}

        summary = runtime.remove_labelled(labels)
        assert len(summary.images) == 1
        assert backdoor.image(tag) is None

    def test_remove_labelled_removes_an_image_and_the_image_built_from_it(self, runtime, backdoor, tmp_path, names, labels):
        # The engines refuse to remove a parent while a child image holds it;
        # cleanup must still leave nothing labelled behind.
        parent = f"localhost/{names('parent')}:contract"
        child = f"localhost/{names('child')}:contract"
        try:
            runtime.build_image(BuildRequest(context_dir=_context(tmp_path, STATIC_DOCKERFILE), tag=parent, labels=labels))
            runtime.build_image(BuildRequest(context_dir=_context(tmp_path, STATIC_DOCKERFILE.replace("yes", "child")),
                                             tag=child, build_args={"BASE": parent}, labels=labels))
            summary = runtime.remove_labelled(labels)
            assert len(summary.images) == 2
            assert backdoor.image(parent) is None and backdoor.image(child) is None
        finally:
            backdoor.remove_image(child)
            backdoor.remove_image(parent)

    def test_a_failing_run_step_raises_build_failed_with_its_output(self, runtime, backdoor, tmp_path, tag, labels, needs_processes):
        marker = f"bottle-build-marker-{RUN_ID}"
        dockerfile = f"ARG BASE=localhost/bottle-base:bookworm\nFROM ${{BASE}}\nRUN echo {marker} && exit 3\n"
        with pytest.raises(BuildFailed) as caught:
            runtime.build_image(BuildRequest(context_dir=_context(tmp_path, dockerfile), tag=tag, labels=labels))
        assert marker in "\n".join(caught.value.log_tail)
        assert len(caught.value.log_tail) <= 20
        assert backdoor.image(tag) is None


NETWORK_PROBE_DOCKERFILE = """\
ARG BASE=localhost/bottle-base:bookworm
FROM ${BASE}
RUN (python3 -c "import socket; socket.create_connection(('deb.debian.org', 80), timeout=10)" \\
     && echo reached || echo unreachable) > /opt/net.txt
"""


class TestBuildNetworkContract:
    """``network_mode="none"``: the RUN steps of a build reach nothing (an approved capability change's default)."""

    @pytest.mark.parametrize("mode, expected", [("none", "unreachable"), (None, "reached")])
    def test_a_build_reaches_the_network_only_when_allowed(self, runtime, tmp_path, tag, labels, make_container, needs_processes, mode, expected):
        request = BuildRequest(context_dir=_context(tmp_path, NETWORK_PROBE_DOCKERFILE), tag=tag, labels=labels, network_mode=mode)
        runtime.build_image(request)
        name = make_container(image=tag)
        assert runtime.exec(name, ["cat", "/opt/net.txt"]).stdout.decode().startswith(expected)


class TestImportContract:
    def test_import_of_a_rootfs_tarball_makes_a_tagged_image(self, runtime, backdoor, tmp_path, tag, labels):
        tarball = tmp_path / "rootfs.tar"
        with tarfile.open(tarball, "w") as archive:
            info = tarfile.TarInfo("etc/bottle-imported")
            payload = f"imported {RUN_ID}\n".encode()
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
        image = runtime.import_image(str(tarball), tag)
        seen = backdoor.image(tag)
        assert seen is not None and tag in seen["tags"]
        assert runtime.inspect_image(tag).id == image.id
        # Its content, read back through a container made from it.
        name = f"bct-{RUN_ID}-{tag.rsplit('/', 1)[1].split(':')[0]}-reader"
        runtime.create_container(ContainerSpec(name=name, image=tag, command=("/none",), labels=labels))
        (entry,) = runtime.copy_out(name, "/etc/bottle-imported")
        assert entry.content == f"imported {RUN_ID}\n".encode()
