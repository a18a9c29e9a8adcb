"""The one way the kit reads a file written by `torch.save`: weights only, errors in one line.

`torch.load(weights_only=True)` unpickles tensors, plain containers, numbers and strings and
refuses anything else, so a checkpoint cannot run code when it is read. Its refusal and its
errors for a file that is not a torch file are long, multi-line texts (the refusal recommends
`weights_only=False`, which the kit never uses); here each becomes one user error naming the file.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any

import torch

from lmkcomp.errors import UserInputError

#: what torch's weights-only unpickler says of a pickled object other than tensors and
#: containers (garbage bytes get "Unsupported operand" instead)
_UNSAFE_OBJECT = "Unsupported global"


def load_weights_only(path: str | Path, what: str = "checkpoint") -> Any:
    """What `torch.save` wrote to `path`, read on the CPU with `weights_only=True`.

    `what` names the file's role in messages ("checkpoint", "weights file"). A file holding
    pickled objects other than plain tensors and containers is refused for safety, and a file
    that is empty, truncated or not a torch file is unreadable: both are user errors in one
    line naming `path`. An OSError (missing file, no permission) is left to the caller.
    """
    try:
        with warnings.catch_warnings():
            # torch warns about the pickle protocol of files it then refuses or reads anyway
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except pickle.UnpicklingError as error:
        if _UNSAFE_OBJECT in str(error):
            raise UserInputError(f"{path}: {what} holds pickled objects that are not plain tensors; refused for "
                                 "safety (only weights-only files are loaded)") from None
        raise UserInputError(f"{path}: unreadable {what}: not a torch-saved file of tensors") from None
    except Exception as error:  # torch raises many types for a bad file (EOFError, RuntimeError, KeyError...)
        raise UserInputError(f"{path}: unreadable {what}: empty, truncated or not a torch-saved file "
                             f"({type(error).__name__})") from None
