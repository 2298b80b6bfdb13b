"""Pages of the campaigns app, mounted under /sequences/ (the REST API: campaigns/api/)."""

from django.urls import URLPattern, URLResolver, path

from campaigns.views import broadcasts, sequences, simulation

urlpatterns: list[URLPattern | URLResolver] = [
    path("", sequences.sequence_index, name="sequence-list"),
    path("broadcasts/", broadcasts.broadcast_index, name="broadcast-list"),
    path("broadcasts/new/", broadcasts.broadcast_create, name="broadcast-create"),
    path("broadcasts/<uuid:pk>/", broadcasts.broadcast_detail, name="broadcast-detail"),
    path("broadcasts/<uuid:pk>/edit/", broadcasts.broadcast_edit, name="broadcast-edit"),
    path(
        "broadcasts/<uuid:pk>/progress/", broadcasts.broadcast_progress, name="broadcast-progress"
    ),
    path("broadcasts/<uuid:pk>/send/", broadcasts.broadcast_send, name="broadcast-send"),
    path("broadcasts/<uuid:pk>/pause/", broadcasts.broadcast_pause, name="broadcast-pause"),
    path("broadcasts/<uuid:pk>/resume/", broadcasts.broadcast_resume, name="broadcast-resume"),
    path("new/", sequences.sequence_create, name="sequence-create"),
    path("<uuid:pk>/", sequences.sequence_builder, name="sequence-builder"),
    path("<uuid:pk>/settings/", sequences.sequence_settings, name="sequence-settings"),
    path("<uuid:pk>/test-drive/", simulation.sequence_test_drive, name="sequence-test-drive"),
    path("<uuid:pk>/status/", sequences.sequence_status, name="sequence-status"),
    path("<uuid:pk>/steps/add/", sequences.step_add, name="sequence-step-add"),
    path("<uuid:pk>/steps/<str:key>/", sequences.step_edit, name="sequence-step-edit"),
    path("<uuid:pk>/steps/<str:key>/move/", sequences.step_move, name="sequence-step-move"),
    path(
        "<uuid:pk>/steps/<str:key>/connect/",
        sequences.step_connect,
        name="sequence-step-connect",
    ),
    path("<uuid:pk>/steps/<str:key>/delete/", sequences.step_delete, name="sequence-step-delete"),
    path("<uuid:pk>/preview/", sequences.email_preview, name="sequence-preview"),
    path("<uuid:pk>/test-mail/", sequences.email_test_mail, name="sequence-test-mail"),
]
