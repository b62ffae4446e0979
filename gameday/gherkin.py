"""Refuse feature files whose lines Gherkin would silently read as prose.

Gherkin lets a scenario start with free text (its description) before the first step, so a
misspelled keyword there (`Whenn I place an order`) is not an error: the step is simply not
run, and the scenario passes without it. The harness's scenarios have no descriptions (the
feature's description says what they are for), so inside a Scenario, Background or Examples
block every line must be a step, a table row, a doc string, a tag or a comment. A line that is
not is an error naming the file and the line, raised while the file is collected.

In the description of a feature or a rule, prose is allowed, but a line that looks like a
misspelled block keyword (`Scenaro: ...`) is refused too: that scenario would vanish.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import pytest
from gherkin.dialect import Dialect

_LANGUAGE = re.compile(r"^\s*#\s*language\s*:\s*(\S+)\s*$")


class GherkinError(pytest.Collector.CollectError):
    """A feature file line that would be ignored; `str()` is the one line to show."""


def check_feature_file(path: Path) -> None:
    """Raise `GherkinError` at the first line Gherkin would silently ignore."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise GherkinError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x})") from None
    problem = first_ignored_line(lines)
    if problem is not None:
        number, message = problem
        raise GherkinError(f"{path}:{number}: {message}")


def first_ignored_line(lines: list[str]) -> tuple[int, str] | None:
    """(line number, why) of the first line that would be read as prose, or None."""
    language = next((m[1] for m in map(_LANGUAGE.match, lines[:5]) if m), "en")
    dialect = Dialect.for_name(language)
    if dialect is None:
        return None  # an unknown language: the parser itself refuses the file
    steps = _words(
        dialect.given_keywords + dialect.when_keywords + dialect.then_keywords
        + dialect.and_keywords + dialect.but_keywords
    )  # fmt: skip
    closed = _words(  # blocks whose body is steps only
        dialect.scenario_keywords + dialect.scenario_outline_keywords
        + dialect.background_keywords + dialect.examples_keywords
    )  # fmt: skip
    prose = _words(dialect.feature_keywords + dialect.rule_keywords)
    in_steps = False
    doc_string: str | None = None
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if doc_string is not None:  # inside a doc string anything goes, to its closing fence
            if line.startswith(doc_string):
                doc_string = None
            continue
        if not line or line.startswith(("#", "@", "|")):
            continue
        if line.startswith(('"""', "```")):
            doc_string = line[:3]
            continue
        block = _block_keyword(line, closed + prose)
        if block is not None:
            in_steps = block in closed
            continue
        if any(line == s.strip() or line.startswith(s) for s in steps if s != "* "):
            continue
        if line.startswith("* "):
            continue
        word = line.split()[0]
        if in_steps:
            return number, _unknown(word, steps, "a step keyword")
        near = _near(word.rstrip(":"), closed + prose) if word.endswith(":") else None
        if near is not None:
            return number, f"{word!r} is not a Gherkin keyword (did you mean {near + ':'!r}?)"
    return None


def _words(keywords: list[str]) -> list[str]:
    # The dialect's step keywords carry their trailing space ("Given "); block keywords do not.
    return list(dict.fromkeys(keywords))


def _block_keyword(line: str, blocks: list[str]) -> str | None:
    return next((b for b in blocks if line.startswith(b + ":")), None)


def _near(word: str, keywords: list[str]) -> str | None:
    names = [k.strip() for k in keywords if k.strip() != "*"]
    match = difflib.get_close_matches(word, names, n=1, cutoff=0.7)
    return match[0] if match else None


def _unknown(word: str, steps: list[str], what: str) -> str:
    near = _near(word, steps)
    hint = f" (did you mean {near!r}?)" if near else ""
    known = ", ".join(dict.fromkeys(s.strip() for s in steps))
    return (
        f"{word!r} is not {what}{hint}: Gherkin would ignore this line; a scenario's lines "
        f"start with {known}"
    )
