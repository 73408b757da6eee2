"""The duty desk's read side and the exercises: status views, the after-action
report, the status wall, the audit, the roster, drills and replays.
"""
