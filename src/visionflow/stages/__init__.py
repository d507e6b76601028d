"""One module per pipeline stage, each exposing ``run(config) -> result``.

The CLI, dvc.yaml (through the CLI) and the tests all call these functions; nothing re-implements a stage.
"""

# Stage name -> one-line summary, in pipeline order (the CLI's help and the Prefect flow read this).
STAGES: dict[str, str] = {
    "prepare": "Find or generate the dataset and write the manifest (one row per image).",
    "validate": "Check the manifest with Great Expectations; stop on bad data, naming the files.",
    "balance": "Class frequencies of the train split (pixels, or images for classification) and class weights.",
    "plan": "Plan the train settings left at auto (input size and policy, batch, lr, epochs) for the budget.",
    "train": "Train the model (DDP under torchrun); opens the MLflow run for it.",
    "evaluate": "Score the model on val (and test): metrics, per-class scores, confusion matrix, panels.",
    "register": "Log and register the model in MLflow; alias champion or challenger.",
}
STAGE_NAMES: tuple[str, ...] = tuple(STAGES)

__all__ = ["STAGES", "STAGE_NAMES"]
