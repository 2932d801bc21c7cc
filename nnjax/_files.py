"""The former home of :func:`nnjax.files.atomic_write`, kept so that old imports still work."""

from nnjax.files import atomic_write

__all__ = ["atomic_write"]
