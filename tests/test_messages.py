"""The reports in Spanish: the same figures as in English, other words."""

from __future__ import annotations

import re
import string
from io import StringIO
from typing import Any

import pytest
from rich.console import Console

from fastpost.bench.report import print_verdict
from fastpost.lab.catalog import EXPERIMENTS, Experiment
from fastpost.lab.report import print_report
from fastpost.lab.result import ExperimentResult, LabReport, Measurement
from fastpost.messages import CATALOGUE, Lang, resolve_language, text

_NUMBER = re.compile(r"\d[\d,.]*")


def _placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


@pytest.mark.parametrize("key", sorted(CATALOGUE))
def test_each_message_has_english_or_a_spanish_twin_with_the_same_placeholders(
    key: str,
) -> None:
    entry = CATALOGUE[key]
    assert "es" in entry, key
    if "en" in entry:
        assert _placeholders(entry["en"]) == _placeholders(entry["es"]), key


@pytest.mark.parametrize(
    ("option", "environment", "expected"),
    [
        (None, {"LANG": "es_ES.UTF-8"}, "es"),
        (None, {"LANG": "en_US.UTF-8"}, "en"),
        (None, {"LC_ALL": "es_MX.UTF-8", "LANG": "en_US.UTF-8"}, "es"),
        (None, {}, "en"),
        ("en", {"LANG": "es_ES.UTF-8"}, "en"),
        ("es", {}, "es"),
    ],
)
def test_the_language_comes_from_the_option_then_the_locale(
    monkeypatch: pytest.MonkeyPatch, option: str | None, environment: dict[str, str], expected: str
) -> None:
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert resolve_language(option) == expected


def _lab_report() -> LabReport:
    result = ExperimentResult(key="pagination", title="4. Pagination: OFFSET vs keyset", why="w")
    result.add(Measurement("OFFSET", "page 1", 0.61, queries=1, same_statement=True))
    result.add(Measurement("keyset (cursor)", "page 1", 0.58, queries=1, is_fix=True))
    result.add(Measurement("OFFSET", "page 1,000", 48.25, queries=1))
    result.add(Measurement("keyset (cursor)", "page 1,000", 0.731, queries=1, is_fix=True))
    result.add(Measurement("x", "1,000,000 items", 0.0000412, memory_bytes=8_000_056))
    result.set_ratios()
    result.verdict = "at page 1,000 OFFSET takes 66.0x the keyset query (30,000 ..., 20 ...)"
    result.verdict_params = {"page": "page 1,000", "ratio": 66.0, "total": 30_000, "limit": 20}
    return LabReport(environment={"database": "sqlite", "repeat": 3}, experiments=[result])


def _printed(draw: Any, lang: Lang) -> str:
    out = StringIO()
    draw(Console(file=out, width=200, color_system=None), lang)
    return out.getvalue()


def test_the_lab_report_in_spanish_has_the_english_figures() -> None:
    report = _lab_report()

    english = _printed(lambda console, lang: print_report(report, console, lang), "en")
    spanish = _printed(lambda console, lang: print_report(report, console, lang), "es")

    assert "same statement" in english
    assert "misma sentencia" in spanish
    assert "66.0x time" in english
    assert "66.0x tiempo" in spanish
    assert "Paginación" in spanish
    assert _NUMBER.findall(spanish) == _NUMBER.findall(english)
    # One unit per column: a figure under a microsecond is still in ms, memory in KiB.
    assert "0.00004" in english
    assert "µs" not in english
    assert "7,812.6" in english


def _bench_report(passed: bool) -> dict[str, Any]:
    verdict = {
        "name": "p95_ms",
        "what": "p95 latency at the fixed rate, ms",
        "limit": 200.0,
        "comparison": "<=",
        "measured": 12.5 if passed else 250.3,
        "passed": passed,
    }
    rps = {
        "name": "rps",
        "what": "requests/s under wrk",
        "limit": 1000.0,
        "comparison": ">",
        "measured": 2500.0,
        "passed": True,
    }
    return {"verdict": {"course": [verdict, rps], "ours": []}}


@pytest.mark.parametrize("passed", [True, False])
def test_the_bench_verdict_is_printed_last_in_either_language(passed: bool) -> None:
    report = _bench_report(passed)

    def draw(console: Console, lang: Lang) -> None:
        print_verdict(report, console, lang, fail_exit_code=3)

    english, spanish = _printed(draw, "en"), _printed(draw, "es")

    assert english.strip().splitlines()[-1].startswith("VERDICT: ")
    assert spanish.strip().splitlines()[-1].startswith("VEREDICTO: ")
    assert ("FAILED" in english) is not passed
    assert _NUMBER.findall(spanish) == _NUMBER.findall(english)


def test_a_message_falls_back_to_english_only_where_it_has_no_spanish() -> None:
    assert text("lab.col.time", "es") == "tiempo (ms)"
    assert text("lab.pagination.verdict_none", "es").startswith("ninguna página después")


@pytest.mark.parametrize("experiment", EXPERIMENTS, ids=str)
def test_every_lab_experiment_has_its_words_in_spanish(experiment: Experiment) -> None:
    for part in ("title", "why", "verdict"):
        assert f"lab.{experiment.name}.{part}" in CATALOGUE
