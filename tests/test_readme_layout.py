"""The README's "Layout" is the map of the whole package: every module (``.py`` file; a
subpackage's ``__init__.py`` is its folder's line) and every folder under src/focalcodec is
named there, in its own folder's section, and everything named there exists."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "src" / "focalcodec"
ENTRY = re.compile(r"^( *)(\S+?(?:\.py|/))(?:\s|$)")


def layout_block(readme: str) -> str:
    section = readme.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```\n(.*?)```", section, flags=re.S)[0]


def parse_map(block: str) -> tuple[list[str], list[str]]:
    """Paths named by the map (folders end with ``/``), nested by indentation (two spaces per
    level), and the lines that are neither an entry nor inside one (problems)."""
    paths, problems, stack = [], [], []  # stack: (indent, folder path)
    for line in block.splitlines():
        if not line.strip():
            continue
        m = ENTRY.match(line)
        if not m:
            problems.append(f"not a map entry (one line per module: NAME.py or FOLDER/ first): {line!r}")
            continue
        indent, name = len(m.group(1)), m.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = (stack[-1][1] if stack else "") + name
        paths.append(path)
        if name.endswith("/"):
            stack.append((indent, path))
    return paths, problems


def package_tree(root: Path) -> set[str]:
    """Every module and folder of the package, as the map spells it (``src/focalcodec/...``)."""
    base = root.parent.parent
    found = {root.relative_to(base).as_posix() + "/"}
    for path in root.rglob("*"):
        rel = path.relative_to(base).as_posix()
        if "__pycache__" in path.parts or path.name.endswith(".egg-info"):
            continue
        if path.is_dir():
            found.add(rel + "/")
        elif path.suffix == ".py" and not (path.name == "__init__.py" and path.parent != root):
            found.add(rel)
    return found


def test_layout_names_every_module_and_nothing_else() -> None:
    paths, problems = parse_map(layout_block((ROOT / "README.md").read_text()))
    assert not problems, "\n".join(problems)
    assert len(paths) == len(set(paths)), f"named twice: {sorted({p for p in paths if paths.count(p) > 1})}"
    named = {p for p in paths if p.startswith("src/focalcodec/")}
    actual = package_tree(PACKAGE)
    missing, gone = sorted(actual - named), sorted(named - actual)
    assert not missing, f"modules missing from the README's Layout (add one line each): {missing}"
    assert not gone, f"the README's Layout names what does not exist (renamed or removed?): {gone}"
    others = [p for p in paths if not p.startswith("src/focalcodec/")]
    assert others and all((ROOT / p).exists() for p in others), others


def test_the_check_catches_a_missing_a_stale_and_a_misplaced_entry(tmp_path: Path) -> None:
    """The parser and the comparison above, on a made-up package (so that the real test cannot
    pass by parsing nothing)."""
    root = tmp_path / "src" / "focalcodec"
    (root / "nn").mkdir(parents=True)
    for f in ("__init__.py", "codec.py", "nn/__init__.py", "nn/bsq.py"):
        (root / f).write_text("")
    assert package_tree(root) == {
        "src/focalcodec/",
        "src/focalcodec/__init__.py",
        "src/focalcodec/codec.py",
        "src/focalcodec/nn/",
        "src/focalcodec/nn/bsq.py",
    }
    good = "src/focalcodec/\n  __init__.py   api\n  codec.py      codec\n  nn/           model\n    bsq.py      q\n"
    assert set(parse_map(good)[0]) == package_tree(root)
    missing = good.replace("  codec.py      codec\n", "")
    assert package_tree(root) - set(parse_map(missing)[0]) == {"src/focalcodec/codec.py"}
    stale = good + "  corpus.py     gone\n"
    assert set(parse_map(stale)[0]) - package_tree(root) == {"src/focalcodec/corpus.py"}
    misplaced = good.replace("    bsq.py", "  bsq.py")  # at the top level, not under nn/
    assert set(parse_map(misplaced)[0]) ^ package_tree(root) == {"src/focalcodec/bsq.py", "src/focalcodec/nn/bsq.py"}
    wrapped = good.replace("model\n", "model,\n                two lines\n")
    assert parse_map(wrapped)[1] and "two lines" in parse_map(wrapped)[1][0]
