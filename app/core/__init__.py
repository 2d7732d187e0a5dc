"""The reference API: file uploads to object storage and Celery tasks."""
