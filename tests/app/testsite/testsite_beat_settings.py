"""Production settings with beat's schedule written after every sent task.

Beat writes its schedule every 3 minutes, or every `beat_sync_every` tasks;
the liveness test compresses prod's 60 s ticks and 900 s probe window into
seconds, so the schedule writes are compressed the same way.
"""

from config.settings.prod import *  # noqa: F403

CELERY_BEAT_SYNC_EVERY = 1
