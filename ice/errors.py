"""The project's own exceptions. The CLI turns them into one line and an exit code."""

import os


class IceError(Exception):
    """A problem the user can fix: a bad argument, a missing folder, an unusable run."""


class ImageError(IceError):
    """One image file could not be read. The job skips it and records the reason."""


def not_a_folder(path: "str | os.PathLike", what: str) -> IceError:
    """The error for a `what` ("input folder", "run directory") that is missing or a file."""
    if os.path.exists(path):
        return IceError(f"{what} {path}: is a file, not a folder")
    return IceError(f"{what} not found: {path}")
