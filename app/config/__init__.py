"""Django project package.

The Celery app is deliberately not imported here: `python -m config.liveness`
must stay cheap, and the tasks module binds to `config.celery.app` explicitly.
"""
