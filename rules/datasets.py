"""Bundled data files: where they live, what they say about themselves (source, licence, date).

A data file starts with `# key: value` header lines; `activelead doctor` prints them. Files written
by `activelead data update` go to the override directory and win over the bundled snapshot.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

BUNDLED_DIR = Path(__file__).resolve().parent / "data"
MAX_DATA_BYTES = 64 * 1024 * 1024


def package_version(name: str) -> str:
    """The installed version of a data package, shown where a file would show its date."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return "v" + version(name)
    except PackageNotFoundError:
        return "missing"


def override_dir() -> Path:
    """Where refreshed data files go (ACTIVELEAD_DATA_DIR, default ./var/data)."""
    return Path(os.environ.get("ACTIVELEAD_DATA_DIR", "var/data"))


@dataclass(frozen=True, slots=True)
class DataFile:
    name: str
    path: Path
    header: dict[str, str]
    lines: list[str]

    @property
    def source(self) -> str:
        return self.header.get("source", "unknown")

    @property
    def date(self) -> str:
        return self.header.get("date", "unknown")


class DataFileError(Exception):
    """A data file that is missing, oversized or unreadable; names the file."""


def read_data_file(name: str, directory: Path | None = None) -> DataFile:
    """Read `name` from the override directory if present there, else the bundled snapshot."""
    candidates = [directory] if directory else [override_dir(), BUNDLED_DIR]
    for base in candidates:
        path = base / name
        if path.is_file():
            break
    else:
        raise DataFileError(f"{name}: not found in {', '.join(map(str, candidates))}")
    if path.stat().st_size > MAX_DATA_BYTES:
        raise DataFileError(f"{path}: larger than {MAX_DATA_BYTES} bytes")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataFileError(f"{path}: {exc}") from exc
    header: dict[str, str] = {}
    lines: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#"):
            key, sep, value = line.lstrip("# ").partition(":")
            if sep and key.strip() in {"source", "licence", "date"}:
                header[key.strip()] = value.strip()
            continue
        if line:
            lines.append(line)
    return DataFile(name, path, header, lines)
