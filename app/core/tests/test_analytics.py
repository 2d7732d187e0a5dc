from __future__ import annotations

import base64
import json
import os
from unittest import mock

from django.core.exceptions import ImproperlyConfigured
from django.test import SimpleTestCase

from core import analytics


class ServiceAccountTest(SimpleTestCase):
    def setUp(self) -> None:
        analytics.service_account_info.cache_clear()
        self.addCleanup(analytics.service_account_info.cache_clear)

    def test_unset_means_disabled(self) -> None:
        with mock.patch.dict(os.environ, {analytics.ENV_VAR: ""}):
            self.assertIsNone(analytics.service_account_info())

    def test_decodes_base64_json(self) -> None:
        info = {"type": "service_account", "client_email": "svc@example.iam"}
        encoded = base64.b64encode(json.dumps(info).encode()).decode()
        with mock.patch.dict(os.environ, {analytics.ENV_VAR: encoded}):
            self.assertEqual(analytics.service_account_info(), info)

    def test_invalid_value_names_the_variable_but_not_its_content(self) -> None:
        secret = "definitely-not-base64-" + "x" * 7
        with (
            mock.patch.dict(os.environ, {analytics.ENV_VAR: secret}),
            self.assertRaises(ImproperlyConfigured) as caught,
        ):
            analytics.service_account_info()
        self.assertIn(analytics.ENV_VAR, str(caught.exception))
        self.assertNotIn(secret, str(caught.exception))
