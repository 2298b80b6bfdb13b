"""Factories for test state. Where a service exists, prefer calling the service itself."""

from __future__ import annotations

import factory

from contacts.models import Contact, ContactStatus
from core.models import Membership, Role, User, Workspace

TEST_PASSWORD = "correct horse battery staple"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    email = factory.Sequence(lambda n: f"user{n}@example.com")
    name = factory.Faker("name")
    password = factory.PostGenerationMethodCall("set_password", TEST_PASSWORD)

    @factory.post_generation
    def save_password(self, create: bool, extracted: object, **kwargs: object) -> None:
        if create:
            self.save()


class WorkspaceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Workspace

    name = factory.Sequence(lambda n: f"Workspace {n}")
    slug = factory.Sequence(lambda n: f"workspace-{n}")
    postal_address = "Musterstraße 1, 10115 Berlin"
    privacy_policy_url = "https://example.com/privacy"


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    user = factory.SubFactory(UserFactory)
    workspace = factory.SubFactory(WorkspaceFactory)
    role = Role.OWNER


class ContactFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Contact

    workspace = factory.SubFactory(WorkspaceFactory)
    email = factory.Sequence(lambda n: f"contact{n}@example.org")
    first_name = factory.Faker("first_name")
    last_name = factory.Faker("last_name")
    status = ContactStatus.NOT_SUBSCRIBED
