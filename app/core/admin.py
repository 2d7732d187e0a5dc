from __future__ import annotations

from django.contrib import admin

from core.models import ApiToken, Heartbeat, StoredFile


@admin.register(StoredFile)
class StoredFileAdmin(admin.ModelAdmin):
    list_display = ("id", "name", "owner", "size", "created_at")
    search_fields = ("name",)
    readonly_fields = (
        "owner", "object_key", "name", "size", "content_type", "sha256",
        "checksum_task_id", "created_at",
    )


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("name", "user", "created_at")
    # Tokens are issued with `manage.py create_api_token`, never typed in.
    fields = ("user", "name", "created_at")
    readonly_fields = ("user", "name", "created_at")

    def has_add_permission(self, request: object) -> bool:
        return False


@admin.register(Heartbeat)
class HeartbeatAdmin(admin.ModelAdmin):
    list_display = ("name", "seen_at")
