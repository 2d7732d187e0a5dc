from __future__ import annotations

from django.db import connection
from django.test import TestCase


class DatabaseVendorTest(TestCase):
    def test_suite_runs_on_postgresql(self) -> None:
        # The point of the suite is the real database; SQLite would hide
        # differences in constraints, types and transactions.
        self.assertEqual(connection.vendor, "postgresql")
