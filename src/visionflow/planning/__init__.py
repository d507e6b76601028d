"""Self-configuration in parts (issue 13), each importable alone:

- :mod:`~visionflow.planning.fingerprint`: what the train split looks like (image sizes; per class its pixel and
  image share, how many objects an image holds and how thin they are; the ignored share), from decoded masks.

The plan stage that turns a fingerprint and a time budget into settings builds on these.
"""

__all__: list[str] = []
