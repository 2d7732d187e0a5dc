"""Django test suite; run against real PostgreSQL, Redis and S3 servers by
tests/app/test_app_django_suite.py (`manage.py test core`)."""
