from django.contrib.auth import views as auth_views
from django.urls import path

from core.views import accounts, health, workspace

urlpatterns = [
    path(
        "login/",
        auth_views.LoginView.as_view(
            template_name="core/login.html", redirect_authenticated_user=True
        ),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("signup/", accounts.signup, name="signup"),
    path(
        "password/reset/",
        auth_views.PasswordResetView.as_view(
            template_name="core/password_reset.html",
            email_template_name="core/email/password_reset.txt",
            html_email_template_name="core/email/password_reset.html",
            subject_template_name="core/email/password_reset_subject.txt",
        ),
        name="password_reset",
    ),
    path(
        "password/reset/sent/",
        auth_views.PasswordResetDoneView.as_view(template_name="core/password_reset_done.html"),
        name="password_reset_done",
    ),
    path(
        "password/reset/<uidb64>/<token>/",
        auth_views.PasswordResetConfirmView.as_view(
            template_name="core/password_reset_confirm.html"
        ),
        name="password_reset_confirm",
    ),
    path(
        "password/reset/done/",
        auth_views.PasswordResetCompleteView.as_view(
            template_name="core/password_reset_complete.html"
        ),
        name="password_reset_complete",
    ),
    path(
        "password/change/",
        auth_views.PasswordChangeView.as_view(template_name="core/password_change.html"),
        name="password_change",
    ),
    path(
        "password/change/done/",
        auth_views.PasswordChangeDoneView.as_view(template_name="core/password_change_done.html"),
        name="password_change_done",
    ),
    path("invitations/<str:token>/", accounts.invitation_accept, name="invitation-accept"),
    path("workspaces/new/", accounts.workspace_create, name="workspace-create"),
    path("workspaces/switch/", accounts.workspace_switch, name="workspace-switch"),
    path("settings/", workspace.workspace_settings, name="workspace-settings"),
    path(
        "settings/sending/resume/",
        workspace.workspace_sending_resume,
        name="workspace-sending-resume",
    ),
    path("settings/members/", workspace.members, name="members"),
    path("settings/members/<int:pk>/role/", workspace.member_change_role, name="member-role"),
    path("settings/members/<int:pk>/remove/", workspace.member_remove, name="member-remove"),
    path(
        "settings/invitations/<uuid:pk>/revoke/",
        workspace.invitation_revoke,
        name="invitation-revoke",
    ),
    path("settings/api-keys/", workspace.api_keys, name="api-keys"),
    path("settings/api-keys/<uuid:pk>/revoke/", workspace.api_key_revoke, name="api-key-revoke"),
    path("outbox/", workspace.outbox, name="outbox"),
    path("outbox/<uuid:pk>/", workspace.outbox_message, name="outbox-message"),
    path("outbox/<uuid:pk>/html/", workspace.outbox_message_html, name="outbox-message-html"),
    path("healthz", health.healthz, name="healthz"),
]
