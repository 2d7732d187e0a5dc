"""Google Analytics service-account credentials from GA_SVC_JSON_BASE64.

Read from the environment on first use, not at import and not into Django
settings: settings are printed on debug error pages and the variable name
does not match Django's list of names it hides. The value is never logged,
and errors name the variable but never echo its content.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import os
from typing import Any

from django.core.exceptions import ImproperlyConfigured

ENV_VAR = "GA_SVC_JSON_BASE64"


@functools.cache
def service_account_info() -> dict[str, Any] | None:
    """The decoded service-account JSON, or None when analytics is off."""
    raw = os.environ.get(ENV_VAR, "").strip()
    if not raw:
        return None
    try:
        info = json.loads(base64.b64decode(raw, validate=True))
    except (binascii.Error, ValueError):
        raise ImproperlyConfigured(
            f"Environment variable {ENV_VAR} is not base64-encoded JSON."
        ) from None
    if not isinstance(info, dict):
        raise ImproperlyConfigured(
            f"Environment variable {ENV_VAR} must encode a JSON object."
        )
    return info
