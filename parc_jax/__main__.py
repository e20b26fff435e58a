"""``python -m parc_jax`` (and the ``parc-jax`` command): score a bank, or work with bank files.

    python -m parc_jax [score] --bank bank.msgpack ...   rank a bank's models (the default)
    python -m parc_jax bank info bank.msgpack            validate, info, merge, from-npz

``python -m parc_jax.score`` and ``python -m parc_jax.bank`` are the same two commands.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from parc_jax import __version__

USAGE = """usage: {prog} [score] [--bank BANK] [options]
       {prog} bank {{validate,info,merge,from-npz}} ...
       {prog} --version | score --help | bank --help

  score   rank the models of a bank by predicted transferability (the default command)
  bank    check, inspect, merge and build bank files
"""


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Dispatch to the ``score`` or ``bank`` command; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if prog is None:
        name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
        prog = "python -m parc_jax" if name in ("__main__.py", "", "-c") else name
    if args and args[0] == "bank":
        from parc_jax.bank.cli import main as bank_main

        return bank_main(args[1:], prog=f"{prog} bank")
    if args and args[0] in ("-h", "--help"):
        sys.stdout.write(USAGE.format(prog=prog))
        return 0
    if args and args[0] == "--version":
        print(f"{prog} {__version__}")
        return 0
    from parc_jax.score import main as score_main

    if args and args[0] == "score":
        return score_main(args[1:], prog=f"{prog} score")
    return score_main(args, prog=prog)


if __name__ == "__main__":
    sys.exit(main())
