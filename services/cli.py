"""`closedloop <command>`: one console script that hands each command to the module that owns it."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence

# command -> (module, help); each module has `main(argv: list[str] | None) -> int`.
COMMANDS: dict[str, tuple[str, str]] = {
    "warehouse": ("services.warehouse.__main__", "run the embedded ClickHouse HTTP server"),
    "migrate": ("services.warehouse.migrations", "apply schemas/clickhouse migrations"),
    "report": ("services.attributor.reports", "print the closed-loop reports"),
    "ad-spend": ("services.attributor.ad_spend", "import ad spend from CSV"),
    "crm-backfill": ("services.crm_ingest.backfill", "import historical deals from a CSV export"),
    "demo": ("services.demo.__main__", "play simulated visitors and deals into a running stack"),
}


def usage() -> str:
    """The list of commands, as printed by `closedloop --help`."""
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: closedloop <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_text}" for name, (_, help_text) in COMMANDS.items()]
    lines += ["", "`closedloop <command> --help` shows a command's options."]
    return "\n".join(lines)


def command_main(name: str) -> Callable[[list[str] | None], int]:
    """The `main` function of a command's module."""
    module_name, _ = COMMANDS[name]
    entry: Callable[[list[str] | None], int] = importlib.import_module(module_name).main
    return entry


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to the command named by the first argument; exit code 2 on a usage error."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        print(usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"closedloop: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    return int(command_main(name)(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
