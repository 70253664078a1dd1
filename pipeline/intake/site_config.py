"""The blog's own site generator and its config (`site.generator`, `site.root`): found, read once
and kept while its files are unchanged.

`read_site_config` is called when config.yaml loads (so a missing or broken generator config is a
config error naming the file) and then for every post; the second and later calls cost a few
`stat`s, since the parsed config is cached by its files' paths, modification times and sizes.
Nothing of the blog is ever run: see each module of `pipeline.intake.generators`.
"""

from __future__ import annotations

import functools
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from pipeline.intake.generators import astro, eleventy, hugo, jekyll, pelican
from pipeline.intake.generators.common import Shown, SiteConfigError

# In the order `auto` tries them; each module has NAME, EXPECTED, config_files, detect, read, derive.
GENERATORS: Mapping[str, ModuleType] = {
    "hugo": hugo, "jekyll": jekyll, "pelican": pelican, "eleventy": eleventy, "astro": astro}
OPTIONAL = ("eleventy", "astro")    # their URLs come from file paths; the config only adds a prefix

__all__ = ["GENERATORS", "SiteConfig", "SiteConfigError", "detect", "read_site_config"]


@dataclass(frozen=True, kw_only=True)
class SiteConfig:
    """A blog's generator (never `auto`), the files read, and the settings its URLs depend on."""

    generator: str
    root: Path                  # absolute
    shown_root: str             # as config.yaml writes it, for messages
    files: tuple[Path, ...]
    settings: Any               # the generator module's settings (HugoSettings, ...)

    @property
    def name(self) -> str:
        return str(GENERATORS[self.generator].NAME)

    @property
    def base_url(self) -> str | None:
        """The address the generator's config gives the site, if it gives a public one."""
        return self.settings.base_url  # type: ignore[no-any-return]

    @property
    def notes(self) -> tuple[str, ...]:
        """What was read but not understood, or assumed, one line each."""
        return tuple(self.settings.notes)

    def shown(self, path: Path) -> str:
        return _shown(self.root, self.shown_root)(path)


def detect(root: Path, shown_root: str) -> str:
    """The generator of the blog at `root`. Raises SiteConfigError (about `site.root`) when no
    generator's files are there, or several are."""
    found = [name for name, module in GENERATORS.items() if module.detect(root)]
    if len(found) == 1:
        return found[0]
    if not found:
        raise SiteConfigError(f"{shown_root} has no site generator config (hugo.toml, _config.yml, "
                              "pelicanconf.py, eleventy.config.js, astro.config.mjs); check site.root "
                              "or set site.generator", key="root")
    raise SiteConfigError(f"{shown_root} looks like a {' and a '.join(GENERATORS[n].NAME for n in found)} "
                          "site; set site.generator to the one that builds it", key="root")


def read_site_config(generator: str, root: Path, *, file: str | None = None,
                     shown_root: str | None = None) -> SiteConfig:
    """The site config of the blog at `root` (`generator` may be `auto`); `file`: a config file
    other than the generator's usual one, relative to `root`. Raises SiteConfigError."""
    shown_root = os.path.normpath(shown_root or str(root))
    # abspath, not resolve(): it costs no system call, and the post's path is made the same way.
    root = Path(os.path.abspath(root))
    try:
        st = root.stat()
    except OSError:
        st = None
    if st is None or not stat.S_ISDIR(st.st_mode):
        raise SiteConfigError(f"{shown_root} is not a folder; set site.root to the blog's repository",
                              key="root")
    listed = st.st_mtime_ns                   # a config file added or removed changes it
    generator, files = _find(generator, root, file, shown_root, listed)
    stamps = []
    for path in files:
        try:
            st = path.stat()
        except OSError as exc:
            raise SiteConfigError(f"{_shown(root, shown_root)(path)}: cannot be read "
                                  f"({exc.strerror or exc})") from None
        stamps.append((str(path), st.st_mtime_ns, st.st_size))
    return _read(generator, str(root), shown_root, tuple(stamps))


@functools.lru_cache(maxsize=32)
def _find(generator: str, root: Path, file: str | None, shown_root: str, listed: int
          ) -> tuple[str, tuple[Path, ...]]:
    """The generator and its config files, found once per state of the root folder (`listed`:
    its modification time): looking costs a dozen `stat`s, and render asks for every post."""
    if generator == "auto":
        generator = detect(root, shown_root)
    module = GENERATORS[generator]
    files = module.config_files(root, file)
    if file and not files[0].is_file():
        raise SiteConfigError(f"{_shown(root, shown_root)(files[0])}: not found", key="generator_config")
    if not files and generator not in OPTIONAL:
        raise SiteConfigError(f"{shown_root} has no {module.NAME} config ({module.EXPECTED}); check "
                              "site.root and site.generator", key="root")
    return generator, tuple(files)


@functools.lru_cache(maxsize=32)
def _read(generator: str, root: str, shown_root: str, stamps: tuple[tuple[str, int, int], ...]) -> SiteConfig:
    """Parsed once per set of file versions: render calls this for every post."""
    files = [Path(path) for path, *_ in stamps]
    settings = GENERATORS[generator].read(files, Path(root), _shown(Path(root), shown_root))
    return SiteConfig(generator=generator, root=Path(root), shown_root=shown_root, files=tuple(files),
                      settings=settings)


def _shown(root: Path, shown_root: str) -> Shown:
    """A file of the blog as messages name it: under `site.root` as config.yaml writes it."""
    def shown(path: Path) -> str:
        try:
            rel = path.relative_to(root).as_posix()
        except ValueError:
            return str(path)
        return rel if shown_root in ("", ".", "./") else f"{shown_root.rstrip('/' + os.sep)}/{rel}"
    return shown
