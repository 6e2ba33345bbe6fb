"""Safe folder walks: each file once, each folder once, never a loop, every link not followed named.

``walk_files`` (a folder, flat or recursive) and ``glob_files`` (a glob pattern, ``**`` included)
are the walks of ``predict``'s folder and glob sources and of the data readers' image folders.
Python's ``glob`` and ``os.walk(followlinks=True)`` follow a link to a folder that holds it again
and again (one image found dozens of times; two such links never end). Here every folder is
walked once, known by its real identity ``(st_dev, st_ino)``: folders reached without a link come
first, then links to folders not yet walked. A file reached twice (a second link or hard link to
it) is listed once. What is not followed is returned as ``(path, reason)``: a link to a folder
already walked, a broken or looping link, a folder that cannot be read.
"""
from __future__ import annotations

import errno
import fnmatch
import os
import re
import stat
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

_MAGIC = re.compile(r"[*?[]")


@dataclass
class Walk:
    """What a walk found: the files in sorted order and ``(path, reason)`` of what it did not follow."""

    files: list[Path] = field(default_factory=list)
    not_followed: list[tuple[Path, str]] = field(default_factory=list)


def _broken_link_reason(error: OSError) -> str:
    if error.errno == errno.ELOOP:
        return "symbolic link that loops (it leads back to itself); not followed"
    if error.errno == errno.ENOENT:
        return "broken symbolic link (its target does not exist); not followed"
    return f"symbolic link that cannot be followed ({error.strerror or error}); not followed"


def _walk(root: Path, max_depth: int | None, keep_file, keep_problem) -> Walk:
    """Every file under ``root`` (to ``max_depth`` folders down; ``None``: all) that ``keep_file(parts)`` accepts."""
    walk = Walk()
    try:
        info = os.stat(root)
    except OSError as error:
        walk.not_followed.append((root, f"cannot read folder ({error.strerror or error})"))
        return walk
    folders: dict[tuple[int, int], Path] = {(info.st_dev, info.st_ino): root}
    files: dict[tuple[int, int], list[tuple[bool, Path]]] = {}
    stack: list[tuple[Path, tuple[str, ...]]] = [(root, ())]
    links: deque[tuple[Path, tuple[str, ...]]] = deque()
    while stack or links:
        if stack:
            folder, parts = stack.pop()
        else:  # every folder reachable without a link is walked: now the links, in order
            folder, parts = links.popleft()
            try:
                info = os.stat(folder)
            except OSError as error:
                walk.not_followed.append((folder, _broken_link_reason(error)))
                continue
            key = (info.st_dev, info.st_ino)
            if key in folders:
                walk.not_followed.append((folder, f"link to a folder already walked ({folders[key]}); not followed"))
                continue
            folders[key] = folder
        try:
            with os.scandir(folder) as scan:
                entries = sorted(scan, key=lambda e: e.name)
        except OSError as error:
            walk.not_followed.append((folder, f"cannot read folder ({error.strerror or error})"))
            continue
        deeper = max_depth is None or len(parts) < max_depth
        subfolders = []
        for entry in entries:
            path, entry_parts = Path(entry.path), (*parts, entry.name)
            try:
                linked = entry.is_symlink()
                info = os.stat(path) if linked else entry.stat(follow_symlinks=False)
            except OSError as error:
                if linked and keep_problem(entry_parts):
                    walk.not_followed.append((path, _broken_link_reason(error)))
                continue
            key = (info.st_dev, info.st_ino)
            if stat.S_ISDIR(info.st_mode):
                if not deeper:
                    continue
                if linked:
                    links.append((path, entry_parts))
                elif key not in folders:
                    folders[key] = path
                    subfolders.append((path, entry_parts))
            elif stat.S_ISREG(info.st_mode) and keep_file(entry_parts):
                files.setdefault(key, []).append((linked, path))
        stack.extend(reversed(subfolders))
    for names in files.values():  # one name per file: a real one before a link, then the first in order
        kept, *others = sorted(names)
        walk.files.append(kept[1])
        walk.not_followed += [(other, f"the same file as {kept[1]}; taken once") for _, other in others]
    walk.files.sort()
    return walk


def _has_suffix(suffixes: Iterable[str] | None):
    wanted = None if suffixes is None else {s.lower() for s in suffixes}
    return lambda parts: wanted is None or Path(parts[-1]).suffix.lower() in wanted


def walk_files(folder: str | Path, suffixes: Iterable[str] | None = None, recursive: bool = False) -> Walk:
    """The files of ``folder`` (and its subfolders when ``recursive``) whose suffix is one of ``suffixes``.

    Hidden files are included, as ``Path.iterdir`` / ``rglob`` give them.
    """
    keep = _has_suffix(suffixes)
    return _walk(Path(folder), None if recursive else 0, keep, keep)


def has_magic(text: str) -> bool:
    """Whether ``text`` is a glob pattern (``*``, ``?`` or ``[``)."""
    return _MAGIC.search(text) is not None


def _matches(pattern: tuple[str, ...], parts: tuple[str, ...]) -> bool:
    """``glob``'s matching of path components: ``**`` any number of folders, hidden names only by a dot."""
    if not pattern:
        return not parts
    head = pattern[0]
    if head == "**":
        if _matches(pattern[1:], parts):
            return True
        return bool(parts) and not parts[0].startswith(".") and _matches(pattern, parts[1:])
    if not parts or (parts[0].startswith(".") and not head.startswith(".")):
        return False
    return fnmatch.fnmatchcase(parts[0], head) and _matches(pattern[1:], parts[1:])


def glob_root(pattern: str) -> tuple[Path, tuple[str, ...]]:
    """The folder a glob starts from (its components before the first wildcard) and the rest."""
    parts = Path(pattern).parts
    first = next((i for i, part in enumerate(parts) if has_magic(part)), len(parts))
    return (Path(*parts[:first]) if first else Path(".")), tuple(parts[first:])


def glob_files(pattern: str, suffixes: Iterable[str] | None = None) -> Walk:
    """The files ``glob.glob(pattern, recursive=True)`` names, with the walk's safety (see the module).

    ``**`` matches any number of folders (none included); hidden names match only a pattern that
    starts with a dot, as in ``glob``.
    """
    root, rest = glob_root(pattern)
    if not rest:
        return Walk([root] if root.is_file() else [])
    suffix = _has_suffix(suffixes)
    depth = None if "**" in rest else len(rest) - 1
    walk = _walk(root, depth, lambda parts: suffix(parts) and _matches(rest, parts), lambda parts: _matches(rest, parts))
    if not root.is_dir():
        walk.not_followed = []  # a pattern under a folder that does not exist: nothing matches, nothing to name
    return walk
