"""Shared test setup: tests import the builders in tests/factory.py by name."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
