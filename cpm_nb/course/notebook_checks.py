"""Checks a course notebook's text must pass: no markdown swallowed into a code cell,
no number in the prose that the notebook neither prints nor sets, and its size in words.

Each check reads a notebook as stored (the ``.ipynb`` JSON, outputs included) and
returns plain findings, so a test can assert on them and a maintainer can print them::

    python -m cpm_nb.course.notebook_checks notebooks/0*.ipynb
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

# A commented markdown heading: '# ## 8. Title' (jupytext writes markdown as '# ...').
_HEADING = re.compile(r"^#\s+#{1,4}\s+\S")
# A trailing comment block this long reads as a paragraph, not as a note on the code.
PROSE_MIN_LINES = 3
PROSE_MIN_WORDS = 25

# Decimals, and integers of three or more digits (thousands separators allowed).
_NUMBER = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(?![\w])")
YEARS = range(1950, 2031)

# Numbers that prose may quote without printing them: constants of the paper, of the
# released code or of the dataset, each with the reason it is allowed.
ALLOWED = {
    "1.171": "the released training code's target_dist (cpm_data_transformer)",
    "368": "the paper's input size (px)",
    "0.636": "PERSON_FRACTION = 1.171 x 200 / 368, derived in the text",
    "200": "MPII's person scale unit (200 px)",
    "12.9": "the MPII image archive's size (GB), from the dataset's download page",
    "12.5": "the MPII annotation archive's size (MB), from the dataset's download page",
    "24,984": "the number of MPII images, from the dataset's download page",
    "1280": "the typical MPII photo width (px)",
    "720": "the typical MPII photo height (px)",
    "410": "the number of MPII activities (Andriluka et al., CVPR 2014)",
    "2,958": "the size of Tompson et al.'s MPII validation split (the file detections.mat)",
    "0.6": "MPII's head size: 0.6 x the head-box diagonal (the official toolkit)",
    "88.5": "CPM's published PCKh@0.5 on the MPII test set (Wei et al., Table 1)",
    "87.95": "the released MPII-only CPM model's published PCKh@0.5 (the release's README)",
    "90.1": "the released VGG-trunk model's PCKh@0.5 on the MPII test set (the release's README)",
    "90.9": "Stacked Hourglass's published PCKh@0.5 on the MPII test set (Newell et al.)",
    "92.3": "HRNet-W32's published PCKh@0.5 on the MPII test set (Sun et al.)",
    "256": "the release's 4 box heights (px): its config.m's 6 scales per octave over 0.8-1.2",
    "287": "the release's 4 box heights (px), as 256",
    "322": "the release's 4 box heights (px), as 256",
    "361": "the release's 4 box heights (px), as 256",
}


@dataclass(frozen=True)
class Finding:
    cell: int  # index in the .ipynb
    what: str

    def __str__(self) -> str:
        return f"cell {self.cell}: {self.what}"


def load(notebook) -> dict:
    """A notebook as its JSON dict: ``notebook`` is a path or an already loaded dict."""
    if isinstance(notebook, dict):
        return notebook
    return json.loads(Path(notebook).read_text(encoding="utf-8"))


def _source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def swallowed(notebook) -> list[Finding]:
    """Code cells that hold markdown as comments (a missing ``# %% [markdown]`` marker):
    a commented heading (``# ## ...``) anywhere, or a trailing block of comment lines
    long enough to be a paragraph (:data:`PROSE_MIN_LINES` lines, :data:`PROSE_MIN_WORDS`
    words) after the last line of code."""
    found = []
    for index, cell in enumerate(load(notebook)["cells"]):
        if cell["cell_type"] != "code":
            continue
        lines = _source(cell).splitlines()
        heading = next((line for line in lines if _HEADING.match(line)), None)
        if heading is not None:
            found.append(Finding(index, f"markdown heading inside a code cell: {heading!r}"))
            continue
        tail = _trailing_comments(lines)
        words = sum(len(line.split()) - 1 for line in tail)  # '#' is no word
        if len(tail) >= PROSE_MIN_LINES and words >= PROSE_MIN_WORDS and len(tail) < len(lines):
            found.append(Finding(index, f"{words} words of prose as trailing comments: "
                                        f"{tail[0]!r} ..."))
    return found


def _trailing_comments(lines: list[str]) -> list[str]:
    """The comment lines after the last line of code (blank lines skipped)."""
    tail = []
    for line in reversed(lines):
        if line.startswith("#") and not line.startswith("#!"):
            tail.append(line)
        elif line.strip():
            break
    return tail[::-1]


def markdown_words(notebook) -> int:
    """Words of the notebook's markdown cells (what a learner reads)."""
    return sum(len(_source(c).split()) for c in load(notebook)["cells"]
               if c["cell_type"] == "markdown")


def prose_numbers(notebook, allowed: dict[str, str] = ALLOWED) -> list[Finding]:
    """Numbers in markdown that the notebook neither prints nor sets in its code.

    Considered: decimals and integers of three or more digits, outside equations
    (``$...$``), fenced code blocks and links; years and :data:`ALLOWED` constants are
    left out.  A prose number is accounted for when an output (stream or text) holds a
    number that rounds to it at the prose's precision, or when a code cell writes it
    literally (then it is an input the reader can see, not a result)."""
    nb = load(notebook)
    printed = set()
    code_literals = set()
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        code_literals.update(_canonical(m) for m in _NUMBER.finditer(_source(cell)))
        for text in _output_texts(cell):
            printed.update(_canonical(m) for m in _NUMBER.finditer(text))
    allowed_set = {_canonical(m) for key in allowed for m in _NUMBER.finditer(key)}
    found = []
    for index, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "markdown":
            continue
        for match in _NUMBER.finditer(_prose_only(_source(cell))):
            number = _canonical(match)
            if _exempt(number) or number in allowed_set or number in code_literals:
                continue
            if not _rounds_to_any(number, printed):
                found.append(Finding(index, f"{match.group(0)} (in: "
                                            f"...{_context(_source(cell), match.group(0))}...)"))
    return found


def _prose_only(text: str) -> str:
    """``text`` without fenced code, equations, link targets and image/URL parts."""
    text = re.sub(r"```.*?```", " ", text, flags=re.DOTALL)
    text = re.sub(r"\$\$.*?\$\$", " ", text, flags=re.DOTALL)
    text = re.sub(r"\$[^$\n]+\$", " ", text)
    text = re.sub(r"`[^`\n]+`", " ", text)  # inline code: commands and arguments, not claims
    text = re.sub(r"\]\([^)]*\)", "]", text)
    return re.sub(r"https?://\S+", " ", text)


def _canonical(match: re.Match) -> str:
    whole, fraction = match.group(1).replace(",", ""), match.group(2) or ""
    return whole + fraction


def _exempt(number: str) -> bool:
    if "." in number:
        return False
    return len(number) < 3 or int(number) in YEARS


def _rounds_to_any(number: str, printed: set[str]) -> bool:
    if number in printed:
        return True
    decimals = len(number.split(".")[1]) if "." in number else 0
    value = float(number)
    tolerance = 0.5 * 10 ** -decimals + 1e-9
    return any(abs(float(p) - value) <= tolerance and _precision(p) >= decimals
               for p in printed)


def _precision(number: str) -> int:
    return len(number.split(".")[1]) if "." in number else 0


def _output_texts(cell) -> list[str]:
    texts = []
    for output in cell.get("outputs", []):
        if "text" in output:
            texts.append(_source({"source": output["text"]}))
        data = output.get("data", {})
        for kind in ("text/plain", "text/markdown", "text/html"):
            if kind in data:
                texts.append(_source({"source": data[kind]}))
    return texts


def _context(text: str, number: str, width: int = 40) -> str:
    at = text.find(number)
    return " ".join(text[max(0, at - width):at + len(number) + width].split())


def report(paths: list[str]) -> int:
    """Print every finding of every notebook; the number of findings."""
    total = 0
    for path in paths:
        problems = [("swallowed", f) for f in swallowed(path)]
        problems += [("prose number", f) for f in prose_numbers(path)]
        print(f"{Path(path).name}: {markdown_words(path)} words of markdown, "
              f"{len(problems)} finding(s)")
        for kind, finding in problems:
            print(f"  {kind}: {finding}")
        total += len(problems)
    return total


if __name__ == "__main__":
    sys.exit(1 if report(sys.argv[1:]) else 0)
