"""Where the course comes from on Colab: one GitHub repository and one release of it.

Every notebook's first code cell pins ``CPM_NB_SOURCE = "OWNER/NAME@REF"``: on Colab it
installs ``cpm-nb @ git+https://github.com/OWNER/NAME@REF`` (unless a wheel was uploaded).
That cell runs before ``cpm_nb`` is installed, so it cannot import anything from here: the
pin is written out in each notebook, and this module keeps the copies honest.  The same
source appears in the Colab badges (the notebooks' title cells and the README's table open
``github/OWNER/NAME/blob/REF/notebooks/FILE``) and in ``pyproject.toml``'s URLs.

* :func:`disagreements` lists every place that names another source, or a release tag
  that is not ``v`` + the package's version (``tests/test_notebooks.py`` asserts none);
* :func:`rewrite` points every place at another source (a fork);
* ``python -m cpm_nb.course.source [OWNER/NAME[@REF]]`` does either from a checkout.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from cpm_nb.core import files
from cpm_nb.core.errors import ConfigError

_REPO = r"[A-Za-z0-9][\w.-]*/[\w.-]+"
# the install cell's line; in an .ipynb the quotes are escaped (\")
PIN = re.compile(rf'CPM_NB_SOURCE = \\?"(?P<repo>{_REPO})@(?P<ref>[^"\\\s]+)\\?"')
BADGE = re.compile(rf"colab\.research\.google\.com/github/(?P<repo>{_REPO})/blob/"
                   rf"(?P<ref>[^/\s]+)/notebooks/(?P<file>[\w.-]+\.ipynb)")
GITHUB = re.compile(rf"https://github\.com/(?P<repo>{_REPO}?)(?=[/\"\s)]|$)")
VERSION = re.compile(r'^__version__ = "([^"]+)"', re.MULTILINE)


@dataclass(frozen=True)
class Source:
    """A GitHub repository (``OWNER/NAME``) at a ref (a tag such as ``v0.1.0``, or a branch)."""

    repo: str
    ref: str

    def __str__(self) -> str:
        return f"{self.repo}@{self.ref}"

    @property
    def pip_requirement(self) -> str:
        return f"cpm-nb @ git+https://github.com/{self}"

    def badge_url(self, notebook: str) -> str:
        return (f"https://colab.research.google.com/github/{self.repo}/blob/{self.ref}/"
                f"notebooks/{notebook}")


def parse(text: str, version: str) -> Source:
    """``OWNER/NAME`` or ``OWNER/NAME@REF`` (default ref: the release tag ``v<version>``)."""
    repo, _, ref = text.strip().removeprefix("https://github.com/").partition("@")
    repo = repo.removesuffix(".git").strip("/")
    if not re.fullmatch(_REPO, repo) or (ref and not re.fullmatch(r"[^\s\"\\/]+(/[^\s\"\\/]+)*",
                                                                   ref)):
        raise ConfigError(f"{text!r} is not a GitHub source: write OWNER/NAME or "
                          "OWNER/NAME@REF, e.g. me/cpm-nb@v0.1.0")
    return Source(repo, ref or f"v{version}")


def version_of(root: Path) -> str:
    """``cpm_nb.__version__`` as the checkout at ``root`` writes it."""
    found = VERSION.search((root / "cpm_nb" / "__init__.py").read_text())
    if not found:
        raise ConfigError(f"no __version__ = \"...\" line in {root / 'cpm_nb' / '__init__.py'}")
    return found.group(1)


def notebook_files(root: Path) -> list[Path]:
    """The numbered notebooks and their ``.py`` twins."""
    return sorted(p for p in (root / "notebooks").glob("[0-9][0-9]_*")
                  if p.suffix in (".ipynb", ".py"))


def pinned(root: Path) -> Source:
    """The source the install cells pin (the first notebook's, when they disagree)."""
    for path in notebook_files(root):
        found = PIN.search(path.read_text())
        if found:
            return Source(found["repo"], found["ref"])
    raise ConfigError(f"no notebook in {root / 'notebooks'} pins CPM_NB_SOURCE")


def disagreements(root: Path) -> list[str]:
    """Every place of the checkout at ``root`` that does not name :func:`pinned`'s source,
    one line each (empty when all agree)."""
    source, version = pinned(root), version_of(root)
    problems = []
    if re.fullmatch(r"v\d.*", source.ref) and source.ref != f"v{version}":
        problems.append(f"CPM_NB_SOURCE's tag {source.ref} is not the package's release "
                        f"v{version} (cpm_nb/__init__.py)")
    for path in notebook_files(root):
        text, name = path.read_text(), path.with_suffix(".ipynb").name
        pins = [Source(m["repo"], m["ref"]) for m in PIN.finditer(text)]
        badges = [(Source(m["repo"], m["ref"]), m["file"]) for m in BADGE.finditer(text)]
        if pins != [source]:
            problems.append(f"{path.name}: pins {[str(p) for p in pins]}, not once {source}")
        if badges != [(source, name)]:
            problems.append(f"{path.name}: badges {[f'{s}:{f}' for s, f in badges]}, not one "
                            f"opening {name} at {source}")
    readme = (root / "README.md").read_text()
    shown = {m["file"] for m in BADGE.finditer(readme)}
    problems += [f"README.md: badge of {m['file']} at {m['repo']}@{m['ref']}, not {source}"
                 for m in BADGE.finditer(readme) if Source(m["repo"], m["ref"]) != source]
    problems += [f"README.md: no badge for {p.name}" for p in notebook_files(root)
                 if p.suffix == ".ipynb" and p.name not in shown]
    urls = re.search(r"^\[project\.urls\]\n((?:[^\[\n].*\n?)*)",
                     (root / "pyproject.toml").read_text(), re.MULTILINE)
    if not urls:
        problems.append("pyproject.toml: no [project.urls] table")
    else:
        problems += [f"pyproject.toml: {m.group(0)} is not {source.repo}"
                     for m in GITHUB.finditer(urls.group(1)) if m["repo"] != source.repo]
    return problems


def rewrite(root: Path, new: Source) -> list[Path]:
    """Point every place of the checkout at ``root`` at ``new``: the install cells and badges
    of the notebooks, the README's badges, pyproject.toml's URLs of the old repository (the
    README's prose about publishing stays as written).  Files are rewritten as text, both
    sides of each notebook pair alike (stored outputs kept), atomically; returns the files
    that changed."""
    old = pinned(root)

    def pin(m):
        quote = '\\"' if m.group(0).endswith('\\"') else '"'
        return f"CPM_NB_SOURCE = {quote}{new}{quote}"

    def badge(m):
        return new.badge_url(m["file"]).removeprefix("https://")

    def url(m):
        return f"https://github.com/{new.repo}" if m["repo"] == old.repo else m.group(0)

    changed = []
    for path in [*notebook_files(root), root / "README.md", root / "pyproject.toml"]:
        text = path.read_text()
        out = BADGE.sub(badge, text)
        if path.parent.name == "notebooks":
            out = PIN.sub(pin, out)
        if path.name == "pyproject.toml":
            out = GITHUB.sub(url, out)
        if path.suffix == ".ipynb":
            json.loads(out)  # still a notebook
        if out != text:
            files.atomic_write_text(path, out)
            changed.append(path)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cpm_nb.course.source",
        description="Show the GitHub source (OWNER/NAME@REF) the Colab install cells, badges "
                    "and pyproject.toml name, and check they agree; with SOURCE, point them all "
                    "at it (a fork).")
    parser.add_argument("source", nargs="?", metavar="OWNER/NAME[@REF]",
                        help="the new source (REF defaults to the release tag v<version>)")
    parser.add_argument("--root", default=None, help="the checkout (default: this package's)")
    args = parser.parse_args(argv)
    from cpm_nb.core import paths

    root = Path(args.root) if args.root else paths.checkout_root()
    try:
        if root is None:
            raise ConfigError("this cpm_nb is not installed from a checkout: run it in a clone "
                              "(pip install -e .) or pass --root")
        if args.source:
            new = parse(args.source, version_of(root))
            for path in rewrite(root, new):
                print(f"rewrote {path.relative_to(root)}")
        print(f"source: {pinned(root)}")
        problems = disagreements(root)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for line in problems:
        print(f"disagrees: {line}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
