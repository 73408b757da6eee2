"""Render an HTML report in headless Chromium (Debian ``chromium``) to a PNG.

Proves that the self-contained page renders with its charts on a machine without internet
access: a fresh profile, no network services, nothing but the file itself.

Usage: .venv/bin/python scripts/screenshot_report.py REPORT.html OUT.png [--width 1280]
       [--height 2000] [--chromium /usr/bin/chromium]

Exit 0 with the PNG written; 2 with one line when Chromium is missing or fails.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class ScreenshotError(RuntimeError):
    """Chromium is missing or did not produce a picture."""


def find_chromium(explicit: str | None = None) -> str:
    """The Chromium binary: ``explicit``, ``$CHROMIUM``, the Debian path, or on ``PATH``."""
    for candidate in (explicit, os.environ.get("CHROMIUM"), *CANDIDATES):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    raise ScreenshotError(
        "chromium not found: install it with `apt-get install -y chromium fonts-noto-cjk`"
        " (Debian) or pass --chromium PATH"
    )


def screenshot(
    html: Path,
    out: Path,
    *,
    width: int = 1280,
    height: int = 2000,
    chromium: str | None = None,
    timeout: float = 60.0,
) -> Path:
    """Write ``out`` (PNG) from ``html``; raise ScreenshotError when that does not happen."""
    binary = find_chromium(chromium)
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        out.unlink()
    with tempfile.TemporaryDirectory(prefix="warnd-chromium-") as profile:
        args = [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--screenshot={out}",
            f"--window-size={width},{height}",
            html.resolve().as_uri(),
        ]
        try:
            run = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise ScreenshotError(f"chromium did not finish within {timeout:.0f}s") from None
    if not out.is_file() or out.read_bytes()[:8] != PNG_MAGIC:
        tail = (run.stderr or run.stdout).strip().splitlines()[-3:]
        raise ScreenshotError(
            f"chromium exited {run.returncode} without a PNG: {' | '.join(tail) or 'no output'}"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("html", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=2000)
    p.add_argument("--chromium", default=None)
    args = p.parse_args(argv)
    if not args.html.is_file():
        print(f"screenshot_report: no such file {args.html}", file=sys.stderr)
        return 2
    try:
        png = screenshot(
            args.html, args.out, width=args.width, height=args.height, chromium=args.chromium
        )
    except ScreenshotError as exc:
        print(f"screenshot_report: {exc}", file=sys.stderr)
        return 2
    print(png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
