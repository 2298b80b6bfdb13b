from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from core.models import ApiKey, Membership, Role, User, Workspace
from core.services import api_key_authenticate

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_create_workspace_prints_only_the_slug_and_makes_the_owner():
    # when
    output = run(
        "create_workspace",
        "Acme Shop",
        "--owner",
        "Boss@Example.com",
        "--password",
        "s3cret-pass-word",
    )

    # then
    assert output == "acme-shop\n"
    workspace = Workspace.objects.get(slug="acme-shop")
    assert workspace.name == "Acme Shop"
    owner = User.objects.get(email="boss@example.com")
    assert owner.check_password("s3cret-pass-word")
    assert Membership.objects.get(workspace=workspace, user=owner).role == Role.OWNER


def test_create_workspace_twice_with_one_name_gives_two_slugs():
    first = run("create_workspace", "Acme", "--owner", "a@example.com").strip()
    second = run("create_workspace", "Acme", "--owner", "a@example.com").strip()

    assert first == "acme"
    assert second.startswith("acme-") and second != first
    assert Workspace.objects.count() == 2


def test_create_api_key_prints_only_a_working_key():
    slug = run("create_workspace", "Acme", "--owner", "a@example.com").strip()

    output = run("create_api_key", slug, "--name", "Shop")

    key = output.strip()
    assert output == key + "\n"
    assert key.startswith("fw_")
    api_key = api_key_authenticate(raw_key=key)
    assert api_key is not None
    assert api_key.workspace.slug == slug
    assert api_key.name == "Shop"
    # only the digest is stored
    assert not ApiKey.objects.filter(key_hash=key).exists()
    assert key not in ApiKey.objects.values_list("key_hash", flat=True)


def test_create_api_key_for_unknown_workspace_fails_clearly():
    with pytest.raises(CommandError, match="No workspace with the slug 'nope'"):
        run("create_api_key", "nope")
