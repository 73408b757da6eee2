"""The ``[wall]`` table: who may see the duty room's wall, and how it shows numbers.

```toml
[wall]
secret_file = "/run/credentials/warnd.service/wall-token"   # or secret_env = "WARND_WALL_TOKEN"
mask_phones = false    # true: 138****5678 on the wall (rooms with visitors)
refresh = "5s"         # how often the page asks for new figures (1s..60s)
title = "泸溪县防汛值班室"  # optional heading
```

Without the table the daemon serves no wall (``/wall`` is 404). The secret (the wall's token)
is read like the hooks' secret, never written in the file, and must be at least
``MIN_TOKEN`` characters: the wall shows names and numbers, and the listener may face the
internet for vendor callbacks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from warnd.config.exposure import read_secret, secret_ref
from warnd.core.errors import ConfigError

if TYPE_CHECKING:
    from warnd.config.policy import _Loader

MIN_TOKEN = 16
KEYS = ("secret_file", "secret_env", "mask_phones", "refresh", "title")


@dataclass(frozen=True, slots=True)
class WallConfig:
    secret_file: Path | None = None
    secret_env: str | None = None
    mask_phones: bool = False
    refresh: timedelta = timedelta(seconds=5)
    title: str | None = None
    source: str | None = field(default=None, compare=False)

    def token(self) -> str:
        """The wall's token, read now; ConfigError when missing, empty or too short."""
        file, env = self.secret_file, self.secret_env
        raw = read_secret(file, env, field="wall.secret", source=self.source)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = ""
        if len(text) < MIN_TOKEN or not text.isprintable() or " " in text:
            key = "wall.secret_file" if self.secret_file is not None else "wall.secret_env"
            raise ConfigError(
                f"值班墙口令须为至少 {MIN_TOKEN} 个可见字符 the wall token must be at least"
                f" {MIN_TOKEN} printable characters without spaces",
                source=self.source,
                field=key,
            )
        return text


def wall_table(loader: _Loader, doc: dict[str, Any]) -> WallConfig | None:
    """``[wall]`` checked with the config loader's own helpers (errors name the TOML line)."""
    if "wall" not in doc:
        return None
    raw = loader.table(doc, "wall", KEYS)
    try:
        file, env = secret_ref(raw, "wall.")
    except ConfigError as exc:
        raise loader.relocated(exc, "wall") from None
    mask = raw.get("mask_phones", False)
    if not isinstance(mask, bool):
        raise loader.error("wall.mask_phones", "应为 true 或 false must be true or false", mask)
    refresh = loader.duration(raw, "refresh", "wall.", timedelta(seconds=5))
    if refresh > timedelta(seconds=60):
        raise loader.error("wall.refresh", "至多 60s must be at most 60s", raw["refresh"])
    title = loader.string(raw, "title", "wall.") if "title" in raw else None
    return WallConfig(file, env, mask, refresh, title, loader.source)
