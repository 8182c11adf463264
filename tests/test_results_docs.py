"""Every file a results folder's README names is in the repository.

A ``.gitignore`` pattern once hid a study's weights and evaluation JSONs that its README listed
as present. This test reads each ``docs/results/*/README.md``, collects the files it names
(Markdown links and back-quoted paths with a file ending) and checks that each is tracked by git
(in a checkout) or present (in an exported tree).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_CODE = re.compile(r"`([^`\s<>*{}$|]+)`")
_FILE = re.compile(r"^[\w./-]+\.(json|jsonl|md|png|safetensors|log|html|toml|sh|txt|csv)$")


def _tracked() -> set[str] | None:
    """Repository-relative paths git tracks (None outside a git checkout)."""
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return set(out.stdout.splitlines())


def named_files(readme: Path) -> list[str]:
    """The files ``readme`` names: link targets (no URLs or anchors) and back-quoted file paths."""
    text = readme.read_text(encoding="utf-8")
    names = [t.split("#", 1)[0] for t in _LINK.findall(text) if not re.match(r"^(https?:|mailto:|#)", t)]
    names += [t for t in _CODE.findall(text) if _FILE.match(t) and not t.startswith(("-", "."))]
    return sorted({n for n in names if n})


def _exists(name: str, readme: Path, tracked: set[str] | None) -> bool:
    for base in (readme.parent, ROOT):
        path = (base / name).resolve()
        try:
            rel = path.relative_to(ROOT).as_posix()
        except ValueError:
            continue
        if tracked is None and path.exists():
            return True
        if tracked is not None and (rel in tracked or any(t.startswith(rel.rstrip("/") + "/") for t in tracked)):
            return True
    return False


READMES = sorted(RESULTS.glob("*/README.md"))


@pytest.mark.parametrize("readme", READMES, ids=[p.parent.name for p in READMES])
def test_results_readme_names_only_files_in_the_repository(readme: Path) -> None:
    tracked = _tracked()
    missing = [n for n in named_files(readme) if not _exists(n, readme, tracked)]
    assert not missing, f"{readme.relative_to(ROOT)} names files that are not in the repository: {missing}"


def test_the_check_finds_a_missing_file(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("Weights: `runs/vanilla/model.safetensors`; table: [study](study.md); see https://x.org\n")
    assert named_files(readme) == ["runs/vanilla/model.safetensors", "study.md"]
    assert not _exists("runs/vanilla/model.safetensors", readme, set())
