"""argparse ``type=`` converters shared by the benchmark scripts.

Each one raises ``argparse.ArgumentTypeError`` with a message that says what was expected, so a
bad argument stops the script at parse time with argparse's one-line usage error (exit status
2), before it reads data, builds banks, compiles or writes anything. Paths come back as the
string given (as argparse's default ``type=str`` would), numbers as ``int`` / ``float``.

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _args import positive_int  # noqa: E402
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path

__all__ = [
    "existing_dir",
    "existing_file",
    "fraction",
    "int_at_least",
    "int_list",
    "method_list",
    "non_negative_int",
    "output_dir",
    "output_file",
    "positive_float",
    "positive_int",
]


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None


def int_at_least(minimum: int) -> Callable[[str], int]:
    """A converter to an int that is at least ``minimum``."""
    what = {0: "a non-negative integer", 1: "a positive integer"}.get(
        minimum, f"an integer of at least {minimum}"
    )

    def convert(text: str) -> int:
        value = _int(text, what)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value

    return convert


def positive_int(text: str) -> int:
    """An int >= 1."""
    return int_at_least(1)(text)


def non_negative_int(text: str) -> int:
    """An int >= 0."""
    return int_at_least(0)(text)


def _float(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite float > 0."""
    value = _float(text, "a positive number")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def fraction(text: str) -> float:
    """A float in (0, 1]."""
    value = _float(text, "a fraction in (0, 1]")
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1], got {text!r}")
    return value


def int_list(text: str) -> list[int]:
    """Comma-separated positive ints, e.g. ``1,16,64``; at least one."""
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or any(not p for p in parts):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers such as 1,16,64, got {text!r}"
        )
    return [positive_int(p) for p in parts]


def method_list(choices: Iterable[str]) -> Callable[[str], str]:
    """A converter for comma-separated names from ``choices`` (``all``, where it is a choice,
    only alone); returns the text unchanged."""
    allowed = list(choices)

    def convert(text: str) -> str:
        names = [p.strip() for p in text.split(",") if p.strip()]
        if not names:
            raise argparse.ArgumentTypeError("name at least one method")
        unknown = [n for n in names if n not in allowed]
        if unknown:
            raise argparse.ArgumentTypeError(
                f"unknown or unsupported method(s) {', '.join(unknown)}; choose from "
                f"{', '.join(allowed)}"
            )
        if "all" in names and len(names) > 1:
            raise argparse.ArgumentTypeError("'all' cannot be combined with other names")
        return text

    return convert


def existing_file(text: str) -> str:
    """The path of an existing file."""
    if not text or not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text!r}")
    return text


def existing_dir(text: str) -> str:
    """The path of an existing folder."""
    if not text or not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"no such folder: {text!r}")
    return text


def _creatable(folder: Path, text: str) -> None:
    """``folder`` exists and is writable, or can be created: its nearest existing ancestor is a
    writable folder."""
    nearest = folder
    while not nearest.exists() and nearest != nearest.parent:
        nearest = nearest.parent
    if not nearest.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r}: {str(nearest)!r} is not a folder")
    if not os.access(nearest, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{text!r}: cannot write in {str(nearest)!r}")


def output_file(text: str) -> str:
    """A file path to write (missing folders are created): not a folder, and under a folder
    that exists or can be created."""
    if not text:
        raise argparse.ArgumentTypeError("expected a file path, got ''")
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder; give a file path")
    if path.exists() and not path.is_file():  # a FIFO or device (/dev/null): written into
        if not os.access(path, os.W_OK):
            raise argparse.ArgumentTypeError(f"cannot write to {text!r}")
        return text
    _creatable(path.absolute().parent, text)
    return text


def output_dir(text: str) -> str:
    """A folder to write into (created if missing): not an existing file."""
    if not text:
        raise argparse.ArgumentTypeError("expected a folder path, got ''")
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} exists and is not a folder")
    _creatable(path.absolute(), text)
    return text
