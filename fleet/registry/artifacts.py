"""Model artifacts on disk: sklearn pipelines saved with skops, sha256-checked before loading.

Artifacts are never unpickled. A file loads only if it lies under the store's root (symlinks and
``..`` resolved), its sha256 matches the one recorded in the registry, and every type it names is
on the allowlist of :mod:`fleet.registry.trust`.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import skops.io as sio

from fleet.errors import IntegrityError, NotFound
from fleet.registry.trust import load_trusted


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``.

    >>> sha256_bytes(b"")[:12]
    'e3b0c44298fc'
    """
    return hashlib.sha256(data).hexdigest()


class ArtifactStore:
    """Saves and loads model artifacts under one root directory.

    URIs are ``file://`` paths under ``root``; the store refuses a path outside it, a file whose
    bytes do not hash to the recorded sha256, and types off the allowlist
    (:mod:`fleet.registry.trust`).
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def confine(self, uri: str) -> Path:
        """The resolved path of ``uri``, if it lies under the store's root.

        Raises:
            IntegrityError: the path (symlinks and ``..`` resolved) is outside the root.
        """
        root = self.root.resolve()
        try:
            path = _path(uri).resolve()
        except (OSError, ValueError) as exc:  # e.g. a NUL byte, a symlink loop
            raise IntegrityError(f"artifact {uri!r} is not a usable path: {exc}") from exc
        if not path.is_relative_to(root):
            raise IntegrityError(
                f"artifact {uri!r} resolves to {str(path)!r}, outside the artifact directory "
                f"{str(root)!r}; artifacts load only from under FLYWHEEL_HOME/artifacts"
            )
        return path

    def save(self, service: str, number: int, model: Any) -> tuple[str, str]:
        """Serialise ``model`` with skops and write it atomically; return ``(uri, sha256)``."""
        data = sio.dumps(model)
        path = self.root / service / f"v{number}.skops"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
        uri = path.resolve().as_uri()
        self.confine(uri)  # e.g. a service directory made a symlink to elsewhere
        return uri, sha256_bytes(data)

    def load(self, uri: str, sha256: str, *, extra: Iterable[str] = ()) -> Any:
        """Load the model at ``uri`` after checking where it is, its sha256 and its types.

        Args:
            uri: the version's ``artifact_uri``.
            sha256: the hash the registry recorded.
            extra: types trusted beyond the allowlist (a service's own).

        Raises:
            NotFound: the file is missing.
            IntegrityError: the path is outside the root, the bytes do not match ``sha256``, or
                the file names a type off the allowlist (nothing in it is run).
        """
        path = self.confine(uri)
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise NotFound(f"artifact {uri!r} is missing") from exc
        actual = sha256_bytes(data)
        if actual != sha256:
            raise IntegrityError(
                f"artifact {uri!r} has sha256 {actual[:12]}…, registry recorded {sha256[:12]}…; "
                "refusing to load a modified model"
            )
        return load_trusted(data, what=f"artifact {uri!r}", extra=extra)


def _path(uri: str) -> Path:
    if uri.startswith("file://"):
        return Path(unquote(urlparse(uri).path))
    if "://" in uri:
        raise IntegrityError(f"artifact {uri!r} is not a file:// URI or a path")
    return Path(uri)
