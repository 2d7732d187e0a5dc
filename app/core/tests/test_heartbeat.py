from __future__ import annotations

from django.conf import settings
from django.test import TestCase

from core.models import Heartbeat
from core.tasks import record_heartbeat


class HeartbeatTest(TestCase):
    def test_heartbeat_upserts_one_row(self) -> None:
        record_heartbeat()
        first = Heartbeat.objects.get(name="beat").seen_at
        record_heartbeat()
        self.assertEqual(Heartbeat.objects.count(), 1)
        self.assertGreaterEqual(Heartbeat.objects.get(name="beat").seen_at, first)

    def test_beat_schedules_the_heartbeat(self) -> None:
        entry = settings.CELERY_BEAT_SCHEDULE["record-heartbeat"]
        self.assertEqual(entry["task"], "core.tasks.record_heartbeat")
        self.assertEqual(entry["task"], record_heartbeat.name)
