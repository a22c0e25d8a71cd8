"""Model artifacts on disk: sklearn pipelines saved with skops, sha256-checked before loading.

Artifacts are never unpickled. skops refuses any type not on its trust list; we trust only the
types a flywheel-trained pipeline is made of (scikit-learn, numpy, scipy and builtins), and only
after the file's sha256 matches the one recorded in the registry.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import skops.io as sio

from fleet.errors import IntegrityError, NotFound

TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.", "builtins.", "collections.", "fleet.")


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``.

    >>> sha256_bytes(b"")[:12]
    'e3b0c44298fc'
    """
    return hashlib.sha256(data).hexdigest()


class ArtifactStore:
    """Saves and loads model artifacts under one root directory.

    URIs are ``file://`` paths; the store refuses to load a file whose bytes do not hash to the
    recorded sha256, and refuses types outside :data:`TRUSTED_PREFIXES`.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def save(self, service: str, number: int, model: Any) -> tuple[str, str]:
        """Serialise ``model`` with skops and write it atomically; return ``(uri, sha256)``."""
        data = sio.dumps(model)
        path = self.root / service / f"v{number}.skops"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
        return path.resolve().as_uri(), sha256_bytes(data)

    def load(self, uri: str, sha256: str) -> Any:
        """Load the model at ``uri`` after checking its sha256.

        Raises:
            NotFound: the file is missing.
            IntegrityError: the bytes do not match ``sha256``, or the file holds untrusted types.
        """
        path = _path(uri)
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
        untrusted = sio.get_untrusted_types(data=data)
        bad = [t for t in untrusted if not t.startswith(TRUSTED_PREFIXES)]
        if bad:
            raise IntegrityError(f"artifact {uri!r} contains untrusted types {bad}")
        return sio.loads(data, trusted=untrusted)


def _path(uri: str) -> Path:
    if uri.startswith("file://"):
        from urllib.parse import unquote, urlparse

        return Path(unquote(urlparse(uri).path))
    return Path(uri)
