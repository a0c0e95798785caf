"""The documentation stays true to the code and self-contained.

- docs/configuration.md's field tables equal what scripts/config_reference.py generates now;
- README.md is at most 150 lines and docs/algorithm.md exists;
- nothing in the repository points outside it for the algorithm spec;
- every relative Markdown link in README.md and docs/*.md leads to an existing file;
- the README's headline figures of the evidence suite are the ones in benchmarks/results/evidence.json.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("README.md", "docs", "src", "tests", "benchmarks", "examples", "scripts")
TEXT_SUFFIXES = {".md", ".py", ".sh", ".yaml", ".yml", ".toml", ".txt", ".cfg", ".ini", ".json", ".jsonl", ".html"}
# Spelled in pieces, so that this file does not match its own patterns.
FORBIDDEN = ("shared" + "/docs", ".." + "/shared", "ALGORITHM" + ".md")


def _generator():
    spec = importlib.util.spec_from_file_location("config_reference", ROOT / "scripts" / "config_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pinned(package: str) -> str:
    """The version constraints.txt pins for `package`."""
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.lower().startswith(f"{package}=="):
            return line.split("==", 1)[1].strip()
    raise AssertionError(f"constraints.txt pins no {package}")


def test_configuration_reference_is_up_to_date():
    import transformers

    # The reference documents the pinned versions: some fields follow the installed transformers
    # (activation_checkpointing from 5.24, overwrite_output_dir where TrainingArguments lacks it).
    if transformers.__version__ != _pinned("transformers"):
        pytest.skip(
            f"docs/configuration.md documents transformers {_pinned('transformers')}, not {transformers.__version__}"
        )
    generator = _generator()
    doc = ROOT / "docs" / "configuration.md"
    assert not generator.is_stale(doc), (
        "docs/configuration.md's field tables differ from the config dataclasses: "
        "run `.venv/bin/python scripts/config_reference.py`"
    )


def test_readme_is_short_and_the_algorithm_is_in_the_repository():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines; move detail into docs/"
    assert (ROOT / "docs" / "algorithm.md").is_file()


def _repository_files() -> list[Path]:
    """Text files under SCANNED: tracked or new, not git-ignored (build outputs, .venv, egg-info)."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", *SCANNED],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
        paths = [ROOT / p for p in out]
    except (OSError, subprocess.CalledProcessError):
        paths = []
        for top in SCANNED:
            base = ROOT / top
            if base.is_file():
                paths.append(base)
                continue
            for folder, dirs, files in os.walk(base):
                dirs[:] = [d for d in dirs if d not in ("__pycache__", "output") and not d.endswith(".egg-info")]
                paths += [Path(folder) / f for f in files]
    return [p for p in paths if p.is_file() and (p.suffix in TEXT_SUFFIXES or p.name == "README")]


def test_no_reference_points_outside_the_repository():
    offenders = []
    for path in _repository_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            for needle in FORBIDDEN:
                if needle in line:
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {needle}")
    assert not offenders, "references to the spec outside the repository (cite docs/algorithm.md):\n" + "\n".join(
        offenders
    )


_FENCE = re.compile(r"^```.*?^```", re.S | re.M)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _relative_links(path: Path) -> list[str]:
    text = _CODE_SPAN.sub("", _FENCE.sub("", path.read_text(encoding="utf-8")))
    targets = []
    for target in _LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
            continue  # http(s)://, mailto:, an anchor on the same page
        targets.append(target.split("#", 1)[0])
    return targets


def test_relative_markdown_links_resolve():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target in _relative_links(page):
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert pages[1:], "docs/ holds no Markdown page"
    assert not broken, "broken relative links:\n" + "\n".join(broken)


def test_readme_headline_comparisons_are_the_evidence_suites():
    """The headline quotes the second design's primary comparison (Q-Tuning 25%x50% - token-matched
    Random) per pool as evidence_v2.json holds it now: NLL "+0.020 nats/token [+0.016, +0.024]"
    (3 decimals) and exact match "-2.9 points [-5.4, -0.5]" (points, 1 decimal)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    headline = next(line for line in readme.splitlines() if line.startswith("| Does Q-Tuning's selection beat"))
    evidence = json.loads((ROOT / "benchmarks" / "results" / "evidence_v2.json").read_text())
    for pool, result in evidence["pools"].items():
        pair = result["paired"]["qtuning_25x50-random_25xR"]
        for metric, scale, digits in (("nll", 1, 3), ("em", 100, 1)):
            mean, (low, high) = pair[metric]["mean"] * scale, [v * scale for v in pair[metric]["ci95"]]
            figure = (
                re.escape(f"{mean:+.{digits}f}")
                + r"(?: nats/token| points)? "
                + re.escape(f"[{low:+.{digits}f}, {high:+.{digits}f}]")
            )
            assert re.search(figure, headline), f"README.md should report {pool} {metric}: {figure} (evidence_v2.json)"
    assert "Random" in evidence["verdict"] and "random subset of the same size and loss tokens did better" in headline
    nominal = evidence["pools"]["mixture"]["paired"].get("qtuning_25x50-random_25x50")
    if nominal is not None and nominal["n"] >= 8:  # the matched-token check the README quotes
        mean, (low, high) = nominal["nll"]["mean"], nominal["nll"]["ci95"]
        assert f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]" in headline
    # the variant (5 seeds) against Random and against Q-Tuning, and the clean context pair, NLL
    quoted = [
        evidence["pools"][pool]["paired"][pair]
        for pool in ("slips", "mixture")
        for pair in ("qtuning_Sx100-random_25xR", "qtuning_Sx100-qtuning_25x50")
    ] + [evidence["context_clean"]["paired"]["qtuning_25x50-random_25xR"]]
    for pair in quoted:
        mean, (low, high) = pair["nll"]["mean"], pair["nll"]["ci95"]
        assert f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]" in headline, f"README.md should quote {mean:+.3f}"
