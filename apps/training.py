"""Which executor the trainer sends jobs to: a local worker process, or a Dask cluster.

``FLYWHEEL_DASK_SCHEDULER`` unset: the embedded default, a spawn process pool in this process.
Set (``tcp://host:8786``): jobs go to that Dask distributed cluster through
``Client.get_executor()``, a ``concurrent.futures.Executor``; the workers need flywheel installed
(they import :func:`fleet.trainer.job.run`) and send the fitted model back to be registered here.
"""

from __future__ import annotations

from apps.settings import Settings
from fleet.errors import InvalidInput
from fleet.registry import Registry
from fleet.trainer import Trainer

CONNECT_TIMEOUT = "10s"
"""How long to wait for the Dask scheduler at start-up."""


def build_trainer(settings: Settings, registry: Registry) -> Trainer:
    """The trainer ``settings`` ask for (the caller closes it, which also closes a Dask client).

    Raises:
        InvalidInput: the Dask scheduler is set but ``distributed`` is missing or unreachable.
    """
    if not settings.dask_scheduler:
        return Trainer(registry)
    return dask_trainer(registry, settings.dask_scheduler)


def dask_trainer(registry: Registry, address: str, *, timeout: str = CONNECT_TIMEOUT) -> Trainer:
    """A trainer whose jobs run on the Dask cluster at ``address`` (a client is opened now).

    Args:
        registry: where the candidates are registered (here, not on the workers).
        address: the scheduler, e.g. ``tcp://10.0.0.5:8786``.
        timeout: how long to wait for the scheduler (a Dask duration such as ``"10s"``).

    Raises:
        InvalidInput: ``distributed`` is not installed or the scheduler cannot be reached.
    """
    try:
        from distributed import Client
    except ImportError as exc:
        raise InvalidInput(
            f"FLYWHEEL_DASK_SCHEDULER={address!r} needs Dask: pip install 'flywheel[dask]', or "
            "unset it to train in a local worker process"
        ) from exc
    try:
        client = Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise InvalidInput(
            f"cannot reach the Dask scheduler at {address!r} (FLYWHEEL_DASK_SCHEDULER): "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    # pure=False: a retried job with the same inputs must run again, not reuse a failed result.
    return Trainer(registry, pool=lambda: client.get_executor(pure=False), backend="dask",
                   on_close=client.close)
