"""Services and model versions: records, artifacts on disk, and their Redis store."""

from fleet.registry.artifacts import ArtifactStore
from fleet.registry.records import Mode, ServiceRecord, VersionRecord, VersionStatus
from fleet.registry.store import Registry

__all__ = ["ArtifactStore", "Mode", "Registry", "ServiceRecord", "VersionRecord", "VersionStatus"]
