"""Files copied in and out keep content, mode, uid and gid."""

from __future__ import annotations

import pytest

from bottle.ports.errors import NotFound
from bottle.ports.runtime import FileEntry

FILES = [
    FileEntry("bottle", is_dir=True, mode=0o755, uid=0, gid=0),
    FileEntry("bottle/notes.txt", b"alpha\nbeta\n", mode=0o640, uid=1000, gid=1000),
    FileEntry("bottle/private", is_dir=True, mode=0o750, uid=1234, gid=2345),
    FileEntry("bottle/private/key", b"\x00\x01binary\xff", mode=0o600, uid=1234, gid=2345),
    FileEntry("bottle/private/run.sh", b"#!/bin/sh\necho hi\n", mode=0o755, uid=0, gid=0),
]


def _content_key(entry: FileEntry) -> tuple:
    return (entry.path, entry.is_dir, entry.content, entry.mode)


def _key(entry: FileEntry) -> tuple:
    return (entry.path, entry.is_dir, entry.content, entry.mode, entry.uid, entry.gid)


class TestFilesContract:
    def test_copy_in_then_out_round_trips_content_and_mode(self, runtime, make_container):
        name = make_container(start=False)
        runtime.copy_in(name, "/tmp", FILES)
        out = runtime.copy_out(name, "/tmp/bottle")
        assert sorted(map(_content_key, out)) == sorted(map(_content_key, FILES))

    def test_copy_out_reports_the_owners(self, runtime, make_container, needs_owners_on_copy_out):
        name = make_container(start=False)
        runtime.copy_in(name, "/tmp", FILES)
        out = runtime.copy_out(name, "/tmp/bottle")
        assert sorted(map(_key, out)) == sorted(map(_key, FILES))

    def test_copied_files_are_what_a_process_inside_sees(self, runtime, make_container, needs_processes):
        name = make_container(start=False)
        runtime.copy_in(name, "/tmp", FILES)
        runtime.start_container(name)
        listing = runtime.exec(name, ["sh", "-c", "cd /tmp && stat -c '%n %a %u %g' bottle bottle/notes.txt bottle/private bottle/private/key bottle/private/run.sh"])
        assert listing.exit_code == 0, listing.stderr
        assert listing.stdout.decode().splitlines() == [
            "bottle 755 0 0",
            "bottle/notes.txt 640 1000 1000",
            "bottle/private 750 1234 2345",
            "bottle/private/key 600 1234 2345",
            "bottle/private/run.sh 755 0 0",
        ]
        assert runtime.exec(name, ["cat", "/tmp/bottle/notes.txt"]).stdout == b"alpha\nbeta\n"
        assert runtime.exec(name, ["/tmp/bottle/private/run.sh"]).stdout == b"hi\n"

    def test_copy_out_of_one_file_names_it_relative_to_its_parent(self, runtime, make_container):
        name = make_container(start=False)
        runtime.copy_in(name, "/tmp", FILES)
        (entry,) = runtime.copy_out(name, "/tmp/bottle/notes.txt")
        assert _content_key(entry) == ("notes.txt", False, b"alpha\nbeta\n", 0o640)

    def test_copy_out_of_a_missing_path_is_not_found(self, runtime, make_container):
        name = make_container(start=False)
        with pytest.raises(NotFound):
            runtime.copy_out(name, "/tmp/bottle-no-such-file")

    def test_copy_in_to_a_missing_directory_is_not_found(self, runtime, make_container):
        name = make_container(start=False)
        with pytest.raises(NotFound):
            runtime.copy_in(name, "/bottle-no-such-dir", FILES[1:2])
