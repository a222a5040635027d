"""The README as a reader meets it: its tables are whole, its links stay inside the repository, and the commands of
"Use" never write into one another's run folders (nor into the quickstart's, except to resume it)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

ROOT = Path(__file__).parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def cells(line: str) -> list[str]:
    """A table row's cells (an escaped \\| inside a cell is not a column border)."""
    inner = line.strip().removeprefix("|").removesuffix("|")
    return [c.strip() for c in re.split(r"(?<!\\)\|", inner)]


def tables(text: str) -> list[list[str]]:
    """Runs of consecutive lines starting with |, outside code blocks."""
    found, current, fenced = [], [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and line.startswith("|"):
            current.append(line)
            continue
        if current:
            found.append(current)
            current = []
    return found + ([current] if current else [])


def test_every_table_has_a_header_a_rule_and_rows_as_wide_as_the_header():
    found = tables(README)
    assert len(found) >= 1
    for table in found:
        header = cells(table[0])
        assert len(table) >= 3, f"a table without rows (or a fragment cut off by a blank line): {table[0]}"
        assert all(re.fullmatch(r":?-{3,}:?", c) for c in cells(table[1])), f"no header rule under {table[0]}"
        assert len(cells(table[1])) == len(header)
        for row in table[2:]:
            assert len(cells(row)) == len(header), row


def test_the_analysis_table_lists_every_analysis_flag_in_one_table():
    (table,) = [t for t in tables(README) if cells(t[0])[0] == "analysis"]
    flags = [cells(row)[0] for row in table[2:]]
    for flag in ("--fourier", "--neurons", "--progress", "--attention", "--ablate", "--gradients"):
        assert f"`{flag}`" in flags
    for flag in ("--fingerprint", "--llc", "--dmd"):
        assert f"`{flag}`" in flags


def test_links_stay_inside_the_repository():
    assert "../" not in README
    for target in re.findall(r"\]\(([^)#]+)\)", README):
        if "://" not in target:
            assert (ROOT / target).exists(), target


def run_folders(command: str) -> tuple[list[str], bool]:
    """The run folders a ``grokscope train`` line writes (by the CLI's documented rules: --name, else the config's
    name, else its stem; ``_seed<k>`` per seed) and whether it resumes."""
    args = shlex.split(command, comments=True)[2:]
    config, options, i = args[0], {}, 1
    while i < len(args):
        if args[i] in ("--resume", "--overwrite", "--quiet", "--forecast"):
            options[args[i]] = True
            i += 1
        else:
            options.setdefault(args[i], []).append(args[i + 1])
            i += 2
    path = ROOT / config if "/" in config else ROOT / "configs" / f"{config}.yaml"
    name = (options.get("--name") or [None])[-1] or yaml.safe_load(path.read_text()).get("name") or path.stem
    seeds = (options.get("--seeds") or [None])[-1]
    if seeds is None:
        return [name], "--resume" in options
    lo, hi = (int(x) for x in seeds.split("-"))
    return [f"{name}_seed{k}" for k in range(lo, hi + 1)], "--resume" in options


def test_the_use_commands_never_collide():
    use = README.split("## Use", 1)[1]
    block = use.split("```bash", 1)[1].split("```", 1)[0]
    commands = [line for line in block.splitlines() if line.startswith("grokscope train ")]
    assert len(commands) >= 5
    taken = {"quickstart": "make quickstart"}
    for command in commands:
        folders, resumes = run_folders(command)
        for folder in folders:
            if resumes:
                assert folder in taken, command  # --resume continues a run made before
                continue
            assert folder not in taken, f"{command!r} writes runs/{folder}/ like {taken[folder]!r}"
            taken[folder] = command
