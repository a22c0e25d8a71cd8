"""Domain exceptions of the fleet; the CLI and the HTTP edges translate them into messages."""

from __future__ import annotations


class FleetError(Exception):
    """Base class for every error the fleet raises on purpose."""


class NotFound(FleetError):
    """A service, version, incident or approval does not exist."""


class UnknownService(NotFound):
    """No service of that name is registered."""

    def __init__(self, name: str, known: list[str] | None = None):
        hint = f"; known services: {', '.join(sorted(known))}" if known else ""
        super().__init__(f"unknown service {name!r}{hint}. Run: flywheel services")
        self.name = name


class UnknownVersion(NotFound):
    """The service has no version with that number."""

    def __init__(self, service: str, version: int, known: list[int] | None = None):
        hint = f"; known versions: {', '.join(map(str, known))}" if known else ""
        super().__init__(
            f"service {service!r} has no version {version!r}{hint}. "
            f"Run: flywheel versions {service}"
        )
        self.service = service
        self.version = version


class AlreadyExists(FleetError):
    """Something with that identity already exists."""


class InvalidInput(FleetError):
    """Input failed validation; the message names the field and the allowed values."""


class IntegrityError(FleetError):
    """Stored data does not match its recorded checksum; it must not be used."""


class PolicyViolation(FleetError):
    """An action was refused by the service's policy (approval, limits, cooldown)."""


class RedisUnavailable(FleetError):
    """Redis cannot be reached or started."""
