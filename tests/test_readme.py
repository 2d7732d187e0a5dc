"""The README stays true: its Layout names every charts/ module, its commands exist."""

from __future__ import annotations

import re

from tests.support.manifests import ROOT

README = (ROOT / "README.md").read_text()
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def section(text: str, title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


def charts_block(layout: str) -> str:
    """The lines of the Layout tree from `charts/` up to the next top-level entry."""
    lines = layout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("charts/"))
    end = next(i for i in range(start + 1, len(lines)) if not lines[i].startswith(" "))
    return "\n".join(lines[start:end])


def layout_problems(block: str, modules: set[str], packages: set[str]) -> list[str]:
    named = set(re.findall(r"(?<![\w/])([a-z_]+\.py|[a-z_]+/)", block))
    problems = [f"not named: {name}" for name in sorted((modules | packages) - named)]
    problems += [f"does not exist: {name}" for name in sorted(named - packages - modules) if name.endswith(".py")]
    return problems


def test_layout_names_every_charts_module_and_package():
    block = charts_block(section(README, "Layout"))
    modules = {p.name for p in (ROOT / "charts").rglob("*.py") if p.name != "__init__.py"}
    packages = {f"{p.parent.name}/" for p in (ROOT / "charts").glob("*/__init__.py")}
    assert len(modules) >= 20 and "monitoring/" in packages, "the walk found too little to check"
    problems = layout_problems(block, modules, packages)
    assert not problems, f"README's Layout is out of date (charts/): {problems}"


def test_the_layout_check_sees_an_added_and_a_removed_module():
    block = charts_block(section(README, "Layout"))
    modules = {p.name for p in (ROOT / "charts").rglob("*.py") if p.name != "__init__.py"}
    packages = {f"{p.parent.name}/" for p in (ROOT / "charts").glob("*/__init__.py")}
    assert layout_problems(block, modules | {"payments.py"}, packages) == ["not named: payments.py"]
    assert layout_problems(block, modules - {"edge.py"}, packages) == ["does not exist: edge.py"]
    assert layout_problems(block, modules, packages | {"billing/"}) == ["not named: billing/"]


def test_every_make_task_the_docs_name_exists():
    targets = set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), re.MULTILINE))
    for doc in DOCS:
        named = set(re.findall(r"`make ([a-z][a-z-]*)", doc.read_text()))
        unknown = sorted(named - targets)
        assert not unknown, f"{doc.relative_to(ROOT)} names make tasks that do not exist: {unknown}"


def test_operations_material_lives_in_docs_operations():
    operations = (ROOT / "docs" / "operations.md").read_text()
    for title in ("Growing a volume", "Disruption budgets", "Monitoring", "Backups and restore", "Troubleshooting"):
        assert re.search(rf"^## {title}$", operations, re.MULTILINE), title
        assert not re.search(rf"^#+ {title}$", README, re.MULTILINE), f"README still has '{title}'"
    assert "docs/operations.md" in section(README, "Operations")
