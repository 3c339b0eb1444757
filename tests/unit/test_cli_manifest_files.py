"""Finding and reading manifest files: layers, formats, file errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bottle.cli.manifest_files import load_manifest_files, manifest_layers, secret_presence, user_config_dir
from bottle.core.errors import DOCUMENT, ManifestError
from bottle.ports.errors import InputError


def agents_json(**images: str) -> str:
    return json.dumps({"agents": {name: {"image": image} for name, image in images.items()}})


def agent_md(name: str, image: str) -> str:
    return f"---\nname: {name}\nimage: {image}\n---\nInstructions for {name}.\n"


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, Path]:
    config = tmp_path / "config"
    project = tmp_path / "project"
    (config / "bottle" / "agents").mkdir(parents=True)
    (project / ".bottle" / "agents").mkdir(parents=True)
    return {"env": {"XDG_CONFIG_HOME": str(config)}, "config": config / "bottle", "project": project}  # type: ignore[dict-item]


def load(dirs: dict, explicit: str | None = None):  # type: ignore[no-untyped-def]
    return load_manifest_files(str(dirs["project"]), explicit, dirs["env"])


def test_user_config_dir_honours_xdg(tmp_path: Path) -> None:
    assert user_config_dir({"XDG_CONFIG_HOME": str(tmp_path)}) == str(tmp_path / "bottle")
    assert user_config_dir({}).endswith("bottle")


def test_precedence_user_then_project_then_explicit(dirs: dict, tmp_path: Path) -> None:
    (dirs["config"] / "bottle.json").write_text(agents_json(a="user-a", b="user-b", c="user-c"))
    (dirs["config"] / "agents" / "d.md").write_text(agent_md("d", "user-d"))
    (dirs["project"] / "bottle.json").write_text(agents_json(a="project-a"))
    (dirs["project"] / ".bottle" / "agents" / "b.md").write_text(agent_md("b", "project-b"))
    explicit = tmp_path / "extra.json"
    explicit.write_text(agents_json(a="explicit-a"))
    manifest = load(dirs, str(explicit))
    images = {name: manifest.agent(name).image for name in manifest.names()}
    assert images == {"a": "explicit-a", "b": "project-b", "c": "user-c", "d": "user-d"}
    assert manifest.agent("b").instructions == "Instructions for b."
    assert manifest.sources == (
        str(dirs["config"] / "bottle.json"),
        str(dirs["config"] / "agents" / "d.md"),
        str(dirs["project"] / "bottle.json"),
        str(dirs["project"] / ".bottle" / "agents" / "b.md"),
        str(explicit),
    )


def test_no_files_at_all_is_an_empty_manifest(dirs: dict) -> None:
    assert load(dirs).names() == ()


def test_explicit_markdown_file(dirs: dict, tmp_path: Path) -> None:
    md = tmp_path / "solo.md"
    md.write_text(agent_md("solo", "solo:1"))
    manifest = load(dirs, str(md))
    assert manifest.agent("solo").base_dir == str(tmp_path)


def test_explicit_directory_reads_bottle_json_and_md_files(dirs: dict, tmp_path: Path) -> None:
    d = tmp_path / "pack"
    d.mkdir()
    (d / "bottle.json").write_text(agents_json(x="x:1"))
    (d / "y.md").write_text(agent_md("y", "y:1"))
    (d / "notes.txt").write_text("ignored")
    assert set(load(dirs, str(d)).names()) == {"x", "y"}


def test_explicit_empty_directory_is_an_error(dirs: dict, tmp_path: Path) -> None:
    d = tmp_path / "empty"
    d.mkdir()
    with pytest.raises(InputError, match="holds no bottle.json"):
        load(dirs, str(d))


def test_explicit_missing_file(dirs: dict) -> None:
    with pytest.raises(InputError, match="does not exist") as info:
        load(dirs, "/nonexistent/bottle.json")
    assert info.value.exit_code == 2


def test_a_file_that_is_not_utf8(dirs: dict) -> None:
    (dirs["project"] / "bottle.json").write_bytes(b'{"agents": {"\xff": {}}}')
    with pytest.raises(ManifestError) as info:
        load(dirs)
    assert info.value.field == DOCUMENT and "UTF-8" in info.value.problem
    assert info.value.source == str(dirs["project"] / "bottle.json")


def test_an_error_names_the_file_it_is_in(dirs: dict) -> None:
    (dirs["config"] / "agents" / "bad.md").write_text("---\nname: bad\nimage: x\nbottle: {egres: {}}\n---\n")
    with pytest.raises(ManifestError) as info:
        load(dirs)
    assert info.value.source == str(dirs["config"] / "agents" / "bad.md")
    assert info.value.field == "bottle.egres"


def test_same_name_twice_in_the_project_level_is_an_error(dirs: dict) -> None:
    (dirs["project"] / "bottle.json").write_text(agents_json(a="json-a"))
    (dirs["project"] / ".bottle" / "agents" / "a.md").write_text(agent_md("a", "md-a"))
    with pytest.raises(ManifestError, match="also declared in"):
        load(dirs)


def test_layers_are_grouped(dirs: dict) -> None:
    (dirs["project"] / "bottle.json").write_text(agents_json(a="a"))
    layers = manifest_layers(str(dirs["project"]), None, dirs["env"])
    assert [len(layer) for layer in layers] == [0, 1]


def test_secret_presence_resolves_files_next_to_the_manifest(dirs: dict, tmp_path: Path) -> None:
    (dirs["project"] / "token").write_text("t0ken\n")
    (dirs["project"] / "bottle.json").write_text(json.dumps({"agents": {"a": {"image": "x", "bottle": {
        "egress_proxy": {"routes": [
            {"upstream": "https://a.example", "token_ref": "file:token"},
            {"upstream": "https://b.example", "token_ref": "file:~/home-token"},
            {"upstream": "https://c.example", "token_ref": "env:SOME_UNSET_VARIABLE_XYZ"},
        ]}}}}}))
    (tmp_path / "home-token").write_text("x")
    agent = load(dirs).agent("a")
    from bottle.adapters.local import EnvFileSecretSource

    presence = secret_presence(agent, EnvFileSecretSource(environ={}, base_dir="/"), home=str(tmp_path))
    assert presence == {"file:token": True, "file:~/home-token": True, "env:SOME_UNSET_VARIABLE_XYZ": False}
