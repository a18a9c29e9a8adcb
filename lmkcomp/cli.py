"""The `lmkcomp` command line: argument parsing, and the error boundary.

The boundary (`main`) turns every expected failure (`expected_failure_message`: bad input, an
OSError on a user's path, a missing GPU) into one line, ``lmkcomp: error: ...``, and exit code
2; a genuine bug keeps its traceback, and ``--debug`` shows the traceback of every error.

The subcommands live in `lmkcomp.commands`, one module per area, registered in workflow order;
each is a thin wrapper over a library function whose heavy imports (torch, the generator) happen
inside the subcommand so that `lmkcomp score` starts fast.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import shlex
import sys
import traceback
from typing import Sequence

from lmkcomp import __version__
from lmkcomp.commands import register_all
from lmkcomp.commands.args import DefaultsHelpFormatter, all_parsers
from lmkcomp.errors import UserInputError

EXIT_USER_ERROR = 2
#: OSErrors that a user's path or disk causes (not the kit): one line each, exit code 2
USER_PATH_ERRNOS = frozenset({errno.ENOENT, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR, errno.EEXIST,
                              errno.ENOTEMPTY, errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.ENAMETOOLONG,
                              errno.ELOOP, errno.EFBIG})


def build_parser() -> argparse.ArgumentParser:
    """The `lmkcomp` parser: global options, then every area's subcommands (`register_all`)."""
    parser = argparse.ArgumentParser(prog="lmkcomp", description="Google Landmarks v2 competition kit")
    parser.add_argument("--version", action="version", version=f"lmkcomp {__version__}")
    parser.add_argument("--verbose", action="store_true", help="log debugging details")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of every error, bad input included (before the command: "
                             "lmkcomp --debug COMMAND ...)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    register_all(commands)
    for each in all_parsers(parser):  # one help style everywhere: every option's default shown
        each.formatter_class = DefaultsHelpFormatter
    return parser


def expected_failure_message(error: BaseException) -> str | None:
    """The one-line message of an expected failure, or None for a bug.

    Expected: a `UserInputError` (bad input, a missing GPU, a setting a library refused) and an
    OSError about a user's path (missing, not permitted, not a folder, a folder, disk full...),
    shown as "PATH: reason". Any other OSError (a bad file descriptor, say) is a bug.
    """
    if isinstance(error, UserInputError):
        return str(error)
    if isinstance(error, OSError) and error.errno in USER_PATH_ERRNOS:
        paths = [str(path) for path in (error.filename, error.filename2) if path is not None]
        reason = error.strerror or os.strerror(error.errno)
        return f"{' -> '.join(paths)}: {reason}" if paths else reason
    return None


def _output_folder_lock(args: argparse.Namespace, argv: Sequence[str]) -> contextlib.AbstractContextManager:
    """The lock of the folder a command writes (`lmkcomp.outdir`): the argument its parser names
    in ``output_folder``; nothing for a command without one, or for a torchrun rank other than 0
    (rank 0 holds the run folder's lock for all of them)."""
    name = getattr(args, "output_folder", None)
    folder = getattr(args, name) if name else None
    if folder is None or os.environ.get("RANK", "0") != "0":
        return contextlib.nullcontext()
    from lmkcomp.outdir import output_folder

    return output_folder(folder, shlex.join(["lmkcomp", *argv]))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        with _output_folder_lock(args, sys.argv[1:] if argv is None else argv):
            return args.run(args)
    except (UserInputError, OSError) as error:
        message = expected_failure_message(error)
        if message is None:  # a genuine bug: its traceback is the report
            raise
        if args.debug:
            traceback.print_exc()
        print(f"lmkcomp: error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("lmkcomp: interrupted", file=sys.stderr)
        return 130
