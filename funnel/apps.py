from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class FunnelConfig(AppConfig):
    name = "funnel"
    verbose_name = _("Funnel")

    def ready(self) -> None:
        from funnel import extensions, receivers  # noqa: F401  (receivers connect on import)

        extensions.register()
