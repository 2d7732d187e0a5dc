"""How the runtime suites are split and how the host avoids running them twice."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.support import roots
from tests.support.roots import APP_PARTS, BACKUP_PARTS, HOST_ONLY, IN_ROOT, REPO, skip_host_copies, suite_part


def test_the_parts_cover_each_suite_once():
    for suite, parts in (("tests/app", APP_PARTS), ("tests/backup", BACKUP_PARTS)):
        run = [path for name in parts for path in suite_part(suite, parts, name)]
        every = sorted(f"{suite}/{path.name}" for path in (REPO / suite).glob("test_*.py"))
        assert sorted(run) == every and len(run) == len(set(run)), suite


class FakeItem(SimpleNamespace):
    def add_marker(self, marker: pytest.MarkDecorator) -> None:
        self.own_markers.append(marker.mark)

    @property
    def skipped(self) -> bool:
        return any(mark.name == "skip" for mark in self.own_markers)


def host_test(nodeid: str) -> FakeItem:
    return FakeItem(nodeid=nodeid, path=REPO / nodeid.split("::")[0], own_markers=[])


def in_root_part(name: str, part: str) -> FakeItem:
    return FakeItem(nodeid=f"tests/test_runtime.py::{name}[{part}]", path=REPO / "tests/test_runtime.py",
                    originalname=name, callspec=SimpleNamespace(params={"part": part}), own_markers=[])


@pytest.fixture
def usable_roots(monkeypatch):
    monkeypatch.delenv(IN_ROOT, raising=False)
    monkeypatch.setattr(roots, "roots_problem", lambda: None)


def test_host_copies_of_a_selected_part_are_skipped_and_host_only_tests_kept(usable_roots):
    redelivery = host_test("tests/app/test_app_redelivery.py::test_x")
    django = host_test("tests/app/test_app_django_suite.py::test_y")
    failures = host_test("tests/backup/test_backup_failures.py::test_z")
    lint = host_test(HOST_ONLY[0])
    elsewhere = host_test("tests/test_render.py::test_w")
    items = [redelivery, django, failures, lint, elsewhere,
             in_root_part("test_app_suite_on_python_313", "celery-redelivery"),
             in_root_part("test_backup_suite_on_postgresql_18", "roundtrip-and-mirror")]
    skip_host_copies(items, REPO)  # type: ignore[arg-type]
    assert redelivery.skipped
    assert not django.skipped, "its part is not selected, so only the host runs it"
    assert not failures.skipped, "test_backup_failures.py is in the other backup part"
    assert not lint.skipped and not elsewhere.skipped


def test_nothing_is_skipped_without_usable_roots_or_inside_a_root(monkeypatch):
    def fresh() -> list[FakeItem]:
        return [host_test("tests/app/test_app_redelivery.py::test_x"),
                in_root_part("test_app_suite_on_python_313", "celery-redelivery")]

    monkeypatch.setattr(roots, "roots_problem", lambda: "runtime roots need root (chroot)")
    monkeypatch.delenv(IN_ROOT, raising=False)
    items = fresh()
    skip_host_copies(items, REPO)  # type: ignore[arg-type]
    assert not items[0].skipped

    monkeypatch.setattr(roots, "roots_problem", lambda: None)
    monkeypatch.setenv(IN_ROOT, "trixie")
    items = fresh()
    skip_host_copies(items, REPO)  # type: ignore[arg-type]
    assert not items[0].skipped


def test_the_host_only_tests_exist():
    for nodeid in HOST_ONLY:
        path, name = nodeid.split("::")
        assert f"def {name}(" in Path(REPO / path).read_text(), nodeid
