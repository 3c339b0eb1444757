"""Entry point of the ``bottle`` console script.

Imports only click and the application module; every command, the wiring
and the SDKs load when a command needs them.
"""

from __future__ import annotations

from bottle.cli.app import cli


def main() -> None:
    """Run the CLI on ``sys.argv`` and exit with its status."""
    cli.main(prog_name="bottle")


if __name__ == "__main__":
    main()
