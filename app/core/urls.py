from __future__ import annotations

from django.urls import path

from core import views

app_name = "api"
urlpatterns = [
    path("", views.index, name="index"),
    path("files/", views.files, name="files"),
    path("files/<int:pk>/", views.file_detail, name="file-detail"),
    path("tasks/", views.tasks, name="tasks"),
    path("tasks/<uuid:task_id>/", views.task_detail, name="task-detail"),
]
