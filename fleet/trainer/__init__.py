"""Training candidates: pure pipeline maths, a picklable job, and a process-pool trainer."""

from fleet.trainer.job import TrainJob, TrainOutput
from fleet.trainer.pipeline import MIN_ROWS, build_pipeline, data_hash, fit, score
from fleet.trainer.trainer import Trainer, TrainResult

__all__ = [
    "MIN_ROWS",
    "TrainJob",
    "TrainOutput",
    "TrainResult",
    "Trainer",
    "build_pipeline",
    "data_hash",
    "fit",
    "score",
]
