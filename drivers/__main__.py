"""``python -m drivers serve MODULE:CLASS --connect ENDPOINT`` and
``python -m drivers check MODULE:CLASS``: the SDK's own entry points (no controller import)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in ("serve", "check"):
        print("usage: python -m drivers {serve|check} MODULE:CLASS [options]", file=sys.stderr)
        return 2
    if args[0] == "serve":
        from .runner import serve_main

        return serve_main(args[1:])
    from .conformance import check_main

    return check_main(args[1:])


if __name__ == "__main__":
    sys.exit(main())
