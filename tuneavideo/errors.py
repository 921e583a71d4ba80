"""Errors the engine raises; the CLI prints them and the app maps them to ``gr.Error``."""

from __future__ import annotations


class TuneAVideoError(Exception):
    """Base class for every error this package raises on purpose."""


class InputError(TuneAVideoError, ValueError):
    """A user-supplied input (file, size, prompt, option) is unusable; the message says how to fix it."""


class VideoError(InputError):
    """A video file cannot be read or does not hold enough frames."""


class ModelLoadError(TuneAVideoError, OSError):
    """Weights or configs could not be found or do not match the expected model."""


class MissingDependencyError(TuneAVideoError, ImportError):
    """An optional package is needed for this feature; the message names what to install."""

    def __init__(self, feature: str, install: str) -> None:
        super().__init__(f"{feature} needs an optional package that is not installed: pip install {install}")
        self.feature = feature
        self.install = install


class Cancelled(TuneAVideoError):
    """A long job (tuning, inversion, sampling) was cancelled by its progress callback."""
