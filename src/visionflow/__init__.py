"""visionflow: reproducible image segmentation pipelines (DVC stages, MLflow tracking, Prefect flows)."""

__version__ = "0.1.0"
