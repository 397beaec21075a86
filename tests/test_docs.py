"""The guide (docs/guide, English; docs/guia, Spanish) stays true to the code: every file it
links exists, every `symbol` it names is defined in the file it links, every image it shows
is one `make docs` draws, and every command in a block marked `sh runnable` runs, at the
small sizes written there, against a small seeded database.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import environment, migrate_and_seed

ROOT = Path(__file__).resolve().parent.parent
GUIDES = (ROOT / "docs" / "guide", ROOT / "docs" / "guia")
PAGES = sorted(page for guide in GUIDES for page in guide.glob("*.md"))
# [text](target): the target up to a space, a closing parenthesis or an anchor.
_LINK = re.compile(r"!?\[([^\]]*)\]\(([^)\s#]*)(#[^)\s]*)?\)")
_SYMBOL = re.compile(r"^`([A-Za-z_][A-Za-z0-9_.]*)`$")
_RUNNABLE = re.compile(r"^```sh runnable\n(.*?)^```", re.DOTALL | re.MULTILINE)


def _links(page: Path) -> list[tuple[str, str, str]]:
    return [(m.group(0), m.group(1), m.group(2)) for m in _LINK.finditer(page.read_text())]


def _plots() -> tuple[str, ...]:
    spec = importlib.util.spec_from_file_location("docs_plots", ROOT / "docs" / "plots.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    plots: tuple[str, ...] = module.PLOTS
    return plots


def test_both_guides_have_a_page_per_chapter_and_the_readme_links_them() -> None:
    english = sorted(p.name for p in GUIDES[0].glob("*.md"))
    spanish = sorted(p.name for p in GUIDES[1].glob("*.md"))
    assert len(english) == len(spanish) >= 11
    # The README's first screen: within its first 15 lines.
    first_screen = "\n".join((ROOT / "README.md").read_text().splitlines()[:15])
    assert "(docs/guide/README.md)" in first_screen
    assert "(docs/guia/README.md)" in first_screen


@pytest.mark.parametrize("page", PAGES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_linked_file_exists_and_every_named_symbol_is_defined_there(page: Path) -> None:
    plots = _plots()
    for link, text, target in _links(page):
        if not target or target.startswith(("http://", "https://")):
            continue
        path = (page.parent / target).resolve()
        if link.startswith("!"):
            # Images are drawn by `make docs`, not kept in the repository.
            assert path.parent == ROOT / "docs" / "img", link
            assert path.name in plots, f"{page.name}: {link} is not drawn by docs/plots.py"
            continue
        assert path.exists(), f"{page.name}: {link} points nowhere"
        symbol = _SYMBOL.match(text)
        # `file.py` as a link's text names the file, not a symbol in it.
        if symbol and path.suffix == ".py" and text.strip("`") != path.name:
            source = path.read_text()
            for name in symbol.group(1).split("."):
                defined = rf"^\s*(?:async def|def|class) {name}\b|^{name}\s*[:=]"
                assert re.search(defined, source, re.MULTILINE), f"{page.name}: {link}"


def _runnable_commands() -> list[str]:
    commands: dict[str, None] = {}
    for page in PAGES:
        for block in _RUNNABLE.findall(page.read_text()):
            for line in block.splitlines():
                if line.strip() and not line.lstrip().startswith("#"):
                    commands[line.strip()] = None
    return list(commands)


def test_the_guides_mark_commands_as_runnable() -> None:
    assert len(_runnable_commands()) >= 5


def test_every_runnable_command_of_the_guides_runs(tmp_path: Path) -> None:
    # One small database like `make run`'s, copied for each command; `.venv/bin/` is the
    # Python running the tests (CI's may live elsewhere). The commands are the same in
    # both languages, and each runs once.
    seeded = tmp_path / "seeded"
    seeded.mkdir()
    env = environment(seeded)
    migrate_and_seed(env, seeded, "--users", "30", "--posts", "300", "--follows", "100",
                     "--likes", "300")  # fmt: skip
    bin_dir = str(Path(sys.executable).parent) + os.sep
    for number, command in enumerate(_runnable_commands()):
        cwd = tmp_path / f"run{number}"
        shutil.copytree(seeded, cwd)
        run_env = {**environment(cwd), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
        done = subprocess.run(
            ["bash", "-c", "set -euo pipefail; " + command.replace(".venv/bin/", bin_dir)],
            cwd=cwd, env=run_env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"


def test_docs_plots_draws_every_plot_from_a_lab_json_and_a_bench_folder(tmp_path: Path) -> None:
    # The shapes `fastpost lab --json` and `fastpost bench --out` write, with made-up figures:
    # the drawing is under test here, not the measuring.
    def measurement(
        variant: str, size: str, ms: float, ratio: float | None, fix: bool
    ) -> dict[str, object]:
        return {"variant": variant, "size": size, "time_ms": ms, "ratio": ratio, "is_fix": fix}

    lab = {
        "experiments": [
            {"key": "n_plus_one", "title": "1. N+1: posts", "ratio_of": "time", "extra": {},
             "measurements": [measurement("N+1", "20 posts", 9.0, 6.0, False),
                              measurement("join", "20 posts", 1.5, 1.0, True)]},
            {"key": "pagination", "title": "4. Pagination", "ratio_of": "time", "extra": {},
             "measurements": [measurement("OFFSET", "page 1", 1.0, None, False),
                              measurement("keyset (cursor)", "page 1", 1.0, 1.0, True),
                              measurement("OFFSET", "page 1,000", 30.0, 30.0, False),
                              measurement("keyset (cursor)", "page 1,000", 1.0, 1.0, True)]},
            {"key": "cache", "title": "6. Cache", "ratio_of": "time",
             "extra": {"cache_stats": {"local:hit": 9, "local:miss": 1, "origin:load": 1}},
             "measurements": [measurement("cold", "5", 2.0, 4.0, False),
                              measurement("warm", "5", 0.5, 1.0, True)]},
        ]
    }  # fmt: skip
    (tmp_path / "lab.json").write_text(json.dumps(lab))
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "report.json").write_text(
        json.dumps(
            {"config": {"scenario": "mixed"}, "metrics": {"cache_hits": 90, "cache_misses": 10}}
        )
    )
    (bench / "latency_over_time.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    out = tmp_path / "img"

    done = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "plots.py"), "--lab", str(tmp_path / "lab.json"),
         "--bench", str(bench), "--out", str(out)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(_plots())
