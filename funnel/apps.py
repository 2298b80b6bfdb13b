from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class FunnelConfig(AppConfig):
    name = "funnel"
    verbose_name = _("Funnel")

    def ready(self) -> None:
        from funnel import extensions, webhook_receivers

        extensions.register()
        webhook_receivers.connect()
