"""Argument checks shared by the command-line scripts: each returns the checked value or raises
argparse.ArgumentTypeError with a message that says what to give instead (argparse prints it with the usage)."""
from __future__ import annotations

import argparse
import math
import os
from typing import Callable, Optional


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help shows each option's default, except where the help text already says it or there is none (flags)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default is None or action.default is False or action.default == argparse.SUPPRESS \
                or "default" in text:
            return text
        return super()._get_help_string(action)


def whole_number(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    parse.__name__ = f"whole number >= {minimum}"
    return parse


def number(minimum: Optional[float] = None, *, above: bool = False, maximum: Optional[float] = None,
           infinite: bool = False) -> Callable[[str], float]:
    """A float in a range; NaN never, ±inf only with ``infinite`` (+inf, meaning "no limit")."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if math.isnan(value):
            raise argparse.ArgumentTypeError("NaN is not a setting: give a number")
        if math.isinf(value) and not (infinite and value > 0):
            raise argparse.ArgumentTypeError(f"must be finite, got {text}")
        if minimum is not None and (value <= minimum if above else value < minimum):
            raise argparse.ArgumentTypeError(f"must be {'>' if above else '>='} {minimum:g}, got {value:g}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be <= {maximum:g}, got {value:g}")
        return value
    parse.__name__ = "number"
    return parse


def _creatable(folder: str, what: str) -> None:
    """``folder`` is an existing writable folder, or can be created (its nearest existing ancestor is one)."""
    ancestor = folder
    while not os.path.exists(ancestor):
        parent = os.path.dirname(ancestor)
        if parent == ancestor:
            break
        ancestor = parent
    if not os.path.isdir(ancestor):
        raise argparse.ArgumentTypeError(f"{what}: {ancestor} is a file, so {folder} cannot be created; choose "
                                         "another path")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{what}: {ancestor} is not writable; choose a folder you can write to")


def output_folder(path: str) -> str:
    """A folder to write into: existing (and writable) or creatable; never an existing file."""
    folder = os.path.abspath(path)
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(f"{path} is a file, not a folder: give a folder (it is created if missing)")
    _creatable(folder, path)
    return folder


def output_file(path: str) -> str:
    """A file to write: not an existing folder, in a folder that exists or can be created."""
    target = os.path.abspath(path)
    if os.path.isdir(target):
        raise argparse.ArgumentTypeError(f"{path} is a folder: give a file name, e.g. {os.path.join(path, 'model.safetensors')}")
    _creatable(os.path.dirname(target), path)
    return target


def shipped_weights_problem(target: str, shipped: str, overwrite: bool) -> Optional[str]:
    """Why ``target`` must not be written (it is the shipped weights file and ``--overwrite-shipped`` is off)."""
    if os.path.realpath(target) == os.path.realpath(shipped) and not overwrite:
        return (f"argument --out: {target} is the weights file the pack ships; it is only replaced with "
                "--overwrite-shipped. To keep it, give another --out")
    return None


def add_weights_output(parser: argparse.ArgumentParser, shipped: str) -> None:
    """--out / --overwrite-shipped of a script that re-trains shipped weights (see :func:`weights_output`)."""
    parser.add_argument("--out", type=output_file, default=None,
                        help="the weights file to write (required unless --overwrite-shipped)")
    parser.add_argument("--overwrite-shipped", action="store_true",
                        help=f"write the shipped weights {shipped} (the default --out then)")


def weights_output(parser: argparse.ArgumentParser, args: argparse.Namespace, shipped: str) -> str:
    """The file to write: --out, or the shipped weights only with --overwrite-shipped (else a usage error)."""
    if args.out is None:
        if not args.overwrite_shipped:
            parser.error(f"give --out FILE for the new weights, or --overwrite-shipped to replace the shipped "
                         f"{shipped}")
        return shipped
    problem = shipped_weights_problem(args.out, shipped, args.overwrite_shipped)
    if problem:
        parser.error(problem)
    return args.out


__all__ = ["HelpFormatter", "add_weights_output", "number", "output_file", "output_folder",
           "shipped_weights_problem", "weights_output", "whole_number"]
