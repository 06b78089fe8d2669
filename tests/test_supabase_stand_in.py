"""The real supabase-py client against the stand-in (tests/supabase_stand_in.py) and a migrated database:
every allow and refuse below is the database's decision (RLS, grants, SECURITY DEFINER functions)."""

from __future__ import annotations

import httpx
import pytest
from postgrest.exceptions import APIError
from storage3.exceptions import StorageApiError

from tests.supabase_project import start_project


@pytest.fixture
def project(pg_url, tmp_path):
    p = start_project(pg_url, tmp_path / "objects")
    p.add_user("a", ["pa"])
    p.add_user("b", ["pb"])
    yield p
    p.stop()


def _user(project, name):
    return project.client(project.anon_key, project.key("authenticated", project.users[name]))


def _code(fn) -> str:
    with pytest.raises(APIError) as info:
        fn()
    return info.value.code


def test_rls_through_the_client(project):
    a, b = _user(project, "a"), _user(project, "b")
    service, anon = project.client(project.service_key), project.client(project.anon_key)
    made = a.table("tasks").insert({"id": "a1", "task_type": "noop", "params": {}, "project_id": "pa"}).execute()
    assert made.data[0]["status"] == "Queued"
    assert _code(lambda: a.table("tasks").insert({"task_type": "noop", "params": {}, "project_id": "pb"})
                 .execute()) == "42501"
    b.table("tasks").insert({"id": "b1", "task_type": "noop", "params": {}, "project_id": "pb"}).execute()
    assert [t["id"] for t in a.table("tasks").select("id, status").execute().data] == ["a1"]
    assert [t["id"] for t in a.table("tasks").select("*").eq("project_id", "pb").execute().data] == []
    assert anon.table("tasks").select("*").execute().data == []
    assert _code(lambda: a.table("tasks").update({"status": "Complete"}).eq("id", "a1").execute()) == "42501"
    assert _code(lambda: a.rpc("worker_claim", {"p_worker": "w", "p_lease_seconds": 30}).execute()) == "42501"
    claimed = service.rpc("worker_claim", {"p_worker": "w", "p_lease_seconds": 30, "p_types": ["noop"]}).execute()
    assert [row["id"] for row in claimed.data] in (["a1"], ["b1"])
    assert {t["id"] for t in service.table("tasks").select("id").execute().data} == {"a1", "b1"}
    # Idempotent insert from an app: the same key gives the same task.
    first = a.rpc("insert_task", {"p_project_id": "pa", "p_task_type": "noop", "p_params": {"x": 1},
                                  "p_idempotency_key": "k"}).execute().data
    again = a.rpc("insert_task", {"p_project_id": "pa", "p_task_type": "noop", "p_params": {"x": 1},
                                  "p_idempotency_key": "k"}).execute().data
    assert first == again and isinstance(first, str)


def test_a_bad_key_is_refused(project):
    from supabase import create_client

    forged = create_client(project.url, project.anon_key[:-4] + "AAAA")
    assert _code(lambda: forged.table("tasks").select("*").execute()) == "PGRST301"


def test_storage_objects_private_signed_and_owned(project, tmp_path):
    service = project.client(project.service_key)
    bucket = service.storage.from_("image_uploads")
    bucket.upload("pa/out.txt", b"hello", {"content-type": "text/plain", "upsert": "true"})
    assert _user(project, "a").storage.from_("image_uploads").download("pa/out.txt") == b"hello"
    with pytest.raises(StorageApiError):
        _user(project, "b").storage.from_("image_uploads").download("pa/out.txt")
    with pytest.raises(StorageApiError):  # only workers (the service role) write
        _user(project, "a").storage.from_("image_uploads").upload("pa/x.txt", b"x")
    assert httpx.get(bucket.get_public_url("pa/out.txt")).status_code != 200  # a private bucket
    signed = bucket.create_signed_url("pa/out.txt", 60)["signedURL"]
    assert httpx.get(signed).content == b"hello"
    assert httpx.get(signed.replace("out.txt", "other.txt")).status_code != 200
