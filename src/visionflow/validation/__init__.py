"""Data validation in parts, each importable alone (this package imports none of them, so that reading the
catalogue or rendering a report never imports Great Expectations):

- :mod:`~visionflow.validation.features`: the frames the checks read, computed from the manifest (pure pandas);
- :mod:`~visionflow.validation.checks`: the check catalogue, one typed spec per check, resolved from params.yaml;
  how a verdict becomes failures and the quarantine;
- :mod:`~visionflow.validation.expectations`: the Great Expectations adapter (checkpoints, Data Docs);
- :mod:`~visionflow.validation.report`: the console and markdown reports from one set of tables, and the one-line
  error.

:mod:`visionflow.stages.validate` runs them in order.
"""

__all__: list[str] = []
