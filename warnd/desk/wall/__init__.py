"""The duty room's status wall: a read-only page on the daemon's listener (docs/operations.md).

- ``warnd.desk.wall.config``: the ``[wall]`` table of the config file (its secret, masking,
  refresh).
- ``warnd.desk.wall.data``: the wall's figures, built only on the duty desk's read path
  (``warnd.desk.views``: what ``warnd status`` and ``warnd unreached`` show) and the feed health.
- ``warnd.desk.wall.app``: the aiohttp routes (``GET /wall``, ``/wall/data``, the page's own CSS and
  script from ``static/``), guarded by the wall's secret.

This package imports nothing heavy at import time: ``warnd.config.policy`` loads ``config`` from it.
"""
