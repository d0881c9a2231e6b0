"""The one exception type of microqwen, and its kinds.

Every mistake a user can make (a bad file, a bad argument, a model that does not
fit the config) raises a `MicroQwenError` whose message names what is wrong: the
file, the tensor, the byte offset, the argument. The command line prints that
message on one line and exits with status 2; it never shows a traceback for it.
"""

from __future__ import annotations


class MicroQwenError(Exception):
    """Base class: something the user can fix, explained in the message."""


class FormatError(MicroQwenError):
    """A file's bytes are not what its format promises (JSON, safetensors, tokenizer files)."""


class ConfigError(MicroQwenError):
    """config.json is missing a key, has a key of the wrong type, or disagrees with the weights."""


class ContextError(MicroQwenError):
    """A position past the model's context, or a prompt that does not fit in it."""


class WorkerError(MicroQwenError):
    """A worker process died or stopped answering."""


class DownloadError(MicroQwenError):
    """A model file could not be fetched from the Hub or failed its check."""


class UsageError(MicroQwenError):
    """An argument is out of range or does not fit the others."""


class HookError(MicroQwenError):
    """A hook replaced a value with one of the wrong length, or with something other than numbers."""
