"""Authentication: API keys, vendor JWTs and every refusal code, over real HTTP."""

from __future__ import annotations

import time

import jwt
import pytest

from .sim_helpers import ACCESS_KEY, API_KEY, CREATE, SECRET_KEY, Served, ServeFactory, make_jwt

pytestmark = pytest.mark.anyio


def _alg_none_token() -> str:
    now = int(time.time())
    return jwt.encode({"iss": ACCESS_KEY, "exp": now + 600, "nbf": now - 5}, None, algorithm="none")


REFUSALS = [
    # (case, Authorization header or None, expected vendor code)
    ("no header", None, 1001),
    ("empty header", "", 1001),
    ("Bearer without token", "Bearer", 1001),
    ("not Bearer", f"Basic {API_KEY}", 1000),
    ("unknown API key", "Bearer not-a-key", 1002),
    ("garbage JWT", "Bearer aaa.bbb.ccc", 1002),
    (
        "JWT signed with the wrong secret",
        f"Bearer {make_jwt(secret='wrong-secret-0123456789abcdef0123')}",
        1002,
    ),
    ("JWT with alg none", f"Bearer {_alg_none_token()}", 1002),
    ("JWT with alg HS512", f"Bearer {make_jwt(algorithm='HS512')}", 1002),
    ("JWT from an unknown access key", f"Bearer {make_jwt(iss='someone-else')}", 1002),
    ("expired JWT", f"Bearer {make_jwt(exp_in=-60, nbf_in=-120)}", 1004),
    # Signed when the module is collected: a day ahead stays "not yet" however long the suite runs.
    ("JWT not yet valid", f"Bearer {make_jwt(nbf_in=86_400, exp_in=2 * 86_400)}", 1003),
]


@pytest.mark.parametrize(("case", "header", "code"), REFUSALS, ids=[r[0] for r in REFUSALS])
async def test_refused_credentials_get_401_with_the_vendor_code(
    served: Served, case: str, header: str | None, code: int
) -> None:
    headers = {} if header is None else {"Authorization": header}
    # A fresh request without the client's default header.
    request = served.client.build_request("GET", CREATE, headers=headers)
    if header is None:
        del request.headers["Authorization"]
    response = await served.client.send(request)
    assert response.status_code == 401
    body = response.json()
    assert body["code"] == code
    assert body["data"] is None
    assert body["request_id"]
    assert API_KEY not in body["message"] and SECRET_KEY not in body["message"]


async def test_refused_create_makes_no_task(served: Served) -> None:
    response = await served.client.post(
        CREATE, json={"prompt": "x"}, headers={"Authorization": "Bearer wrong"}
    )
    assert response.status_code == 401
    assert served.sim.task_count() == 0


async def test_api_key_and_jwt_are_both_accepted(served: Served) -> None:
    by_key = await served.client.get(CREATE)
    assert by_key.status_code == 200 and by_key.json()["code"] == 0
    token = make_jwt()
    by_jwt = await served.client.post(
        CREATE, json={"prompt": "a cat"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert by_jwt.status_code == 200, by_jwt.text
    assert by_jwt.json()["data"]["task_status"] == "submitted"


async def test_jwt_without_nbf_is_accepted(served: Served) -> None:
    token = jwt.encode({"iss": ACCESS_KEY, "exp": int(time.time()) + 600}, SECRET_KEY, algorithm="HS256")
    response = await served.client.get(CREATE, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200


async def test_jwt_without_exp_is_refused(served: Served) -> None:
    token = jwt.encode({"iss": ACCESS_KEY}, SECRET_KEY, algorithm="HS256")
    response = await served.client.get(CREATE, headers={"Authorization": f"Bearer {token}"})
    assert (response.status_code, response.json()["code"]) == (401, 1002)
    assert "exp" in response.json()["message"]


async def test_open_mode_accepts_any_token_but_not_none(serve: ServeFactory) -> None:
    async with serve(api_keys=(), access_keys={}) as s:
        anything = await s.client.get(CREATE, headers={"Authorization": "Bearer whatever"})
        assert anything.status_code == 200
        empty = await s.client.get(CREATE, headers={"Authorization": "Bearer"})
        assert (empty.status_code, empty.json()["code"]) == (401, 1001)


async def test_admin_routes_need_no_vendor_auth(served: Served) -> None:
    response = await served.client.get("/admin/counters", headers={"Authorization": ""})
    assert response.status_code == 200
    assert response.json()["data"]["tasks"] == 0
