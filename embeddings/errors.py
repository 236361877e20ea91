"""The project's own exceptions. The CLI turns them into one line and an exit code."""


class IceError(Exception):
    """A problem the user can fix: a bad argument, a missing folder, an unusable run."""


class ImageError(IceError):
    """One image file could not be read. The job skips it and records the reason."""
