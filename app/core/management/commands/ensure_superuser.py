"""Create the superuser from DJANGO_SUPERUSER_* unless it already exists.

Safe to run on every deploy (a Job or an init step): an existing user is
left untouched, its password included, so a password changed in the admin
is not reset by the next release.
"""

from __future__ import annotations

import os
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import IntegrityError


class Command(BaseCommand):
    help = (
        "Create a superuser from DJANGO_SUPERUSER_USERNAME, DJANGO_SUPERUSER_EMAIL "
        "and DJANGO_SUPERUSER_PASSWORD if it does not exist yet."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        username = os.environ.get("DJANGO_SUPERUSER_USERNAME", "").strip()
        if not username:
            self.stdout.write("DJANGO_SUPERUSER_USERNAME is not set; nothing to do.")
            return
        user_model = get_user_model()
        if user_model._default_manager.filter(
            **{user_model.USERNAME_FIELD: username}
        ).exists():
            self.stdout.write(f"Superuser {username} already exists; unchanged.")
            return
        # Without a password createsuperuser --noinput makes an account that
        # cannot log in, which is never what a deploy wants.
        password = os.environ.get("DJANGO_SUPERUSER_PASSWORD", "")
        if not password:
            raise CommandError("DJANGO_SUPERUSER_PASSWORD is required to create it.")
        email = os.environ.get("DJANGO_SUPERUSER_EMAIL", "")
        # createsuperuser --noinput skips AUTH_PASSWORD_VALIDATORS, so a
        # password like "admin" would be accepted; check it here.
        candidate = user_model(**{user_model.USERNAME_FIELD: username, "email": email})
        try:
            validate_password(password, user=candidate)
        except ValidationError as error:
            raise CommandError(
                "DJANGO_SUPERUSER_PASSWORD is too weak: " + " ".join(error.messages)
            ) from None
        try:
            # createsuperuser reads DJANGO_SUPERUSER_PASSWORD (and EMAIL)
            # from the environment itself.
            call_command(
                "createsuperuser",
                interactive=False,
                username=username,
                email=email,
                verbosity=0,
            )
        except IntegrityError:
            # Another replica created it between our check and the insert.
            self.stdout.write(f"Superuser {username} already exists; unchanged.")
            return
        self.stdout.write(f"Superuser {username} created.")
