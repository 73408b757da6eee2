"""The rules of the 631 warning and call-back chain (contracts §3), as pure functions.

- ``plan``: whether a warning dispatches (expired, below threshold, no area → recorded, not
  sent), when each stage fires (``T - lead``, or at arrival when that has passed; T is onset,
  else effective, else sent) and whom it calls (the A persons of every division of the stage's
  level that overlaps the area).
- ``ladder``: one division being reached — attempts every ``window`` up to ``attempts``, an
  answer ends the call and reaches the division, and a division whose calls all failed moves
  to ``backup`` → ``superior`` → ``duty`` (the county's not-woken list).

Neither reads a clock nor touches storage: the engine (``warnd.engine``) feeds them data and a
time and carries out what they return. Update and Cancel handling, which needs the store (who
was notified), lives in ``warnd.engine.ingest`` and calls into these rules.
"""
