"""``python -m mpiml <command> [arguments]``: every mpiml command (:mod:`mpiml.cli`)."""

import sys
from importlib import import_module

from mpiml import __version__
from mpiml.cli import COMMANDS


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        lines = ["usage: python -m mpiml <command> [arguments]  (or mpiml-<command> ...)", "",
                 "commands:"] + [f"  {name:8} {text}" for name, (_, text) in COMMANDS.items()]
        lines += ["", "python -m mpiml <command> --help shows a command's options."]
        sys.stdout.write("\n".join(lines) + "\n")
        return 0 if argv else 2
    if argv[0] == "--version":
        sys.stdout.write(f"mpiml {__version__}\n")
        return 0
    if argv[0] not in COMMANDS:
        sys.stderr.write(f"python -m mpiml: error: unknown command {argv[0]!r} (commands: "
                         f"{', '.join(COMMANDS)})\n")
        return 2
    module = import_module(f"mpiml.cli.{COMMANDS[argv[0]][0]}")
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
