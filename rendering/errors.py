"""The error every user-facing input check raises: it names the file (or array) and the problem."""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input: an unreadable file, NaN pixels, wrong shape, an empty mask, …

    The message always starts with the source (a path or a short description of the array) so
    a user can find the offending file.
    """

    def __init__(self, source: object, problem: str):
        self.source = str(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}")
