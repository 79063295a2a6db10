"""The client against the simulator over real loopback HTTP: operations, errors, retries, idempotency."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import anyio
import jwt
import pytest

from kling_omni_mcp.kling import (
    ApiKeyAuth,
    Auth,
    CreateImageRequest,
    JwtAuth,
    KlingAccountError,
    KlingAuthError,
    KlingClient,
    KlingError,
    KlingPermissionError,
    KlingPolicyError,
    KlingRateLimitError,
    KlingServerError,
    KlingTaskNotFoundError,
    KlingTimeoutError,
    KlingValidationError,
    RetryPolicy,
)
from kling_omni_mcp.simulator import Simulator, SimulatorConfig, running_simulator

from .conftest import Switchboard

API_KEY = "sim-key-for-client-tests"
ACCESS_KEY = "ak-client-tests"
SECRET_KEY = "sk-client-tests-0123456789abcdef0123"
ELEMENT_ID = 829836802793406551  # beyond 2**53: a float would turn it into ...552

FAST = RetryPolicy(max_attempts=5, base_delay=0.02, max_delay=0.1, deadline=10.0, concurrency_min_delay=0.05)


@dataclass
class Env:
    sim: Simulator
    base_url: str

    def client(
        self, *, auth: Auth | None = None, retry: RetryPolicy = FAST, timeout: float = 5.0
    ) -> KlingClient:
        return KlingClient(self.base_url, auth or ApiKeyAuth(API_KEY), retry=retry, timeout=timeout)


@pytest.fixture
async def env(switchboard: Switchboard) -> AsyncIterator[Env]:
    sim = Simulator(
        SimulatorConfig(
            api_keys=(API_KEY,), access_keys={ACCESS_KEY: SECRET_KEY}, duration=0.3, image_scale=0.1
        )
    )
    switchboard.app = sim.app
    try:
        yield Env(sim, switchboard.base_url)
    finally:
        switchboard.app = None
        await sim.aclose()


@pytest.mark.anyio
async def test_running_simulator_serves_the_client() -> None:
    # The other tests share one server (see conftest.py); this one uses the simulator's own runner.
    sim = Simulator(SimulatorConfig(api_keys=(API_KEY,), duration=0.3))
    async with (
        running_simulator(sim) as base_url,
        KlingClient(base_url, ApiKeyAuth(API_KEY), retry=FAST) as client,
    ):
        created = await client.create_task(cat())
        assert (await client.get_task(created.task_id)).task_id == created.task_id
    assert sim.task_count() == 1


def cat(**fields: object) -> CreateImageRequest:
    fields.setdefault("prompt", "a cat on a red sofa")
    return CreateImageRequest.model_validate(fields)


class RecordingSleep:
    """Really sleeps (small delays), and remembers each pause."""

    def __init__(self) -> None:
        self.pauses: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.pauses.append(seconds)
        await anyio.sleep(seconds)


# --- operations --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_create_get_and_list(env: Env) -> None:
    async with env.client() as client:
        created = await client.create_task(cat())
        ext = created.external_task_id
        assert ext and ext.startswith("kom-")  # generated when the caller gave none
        assert created.task_status == "submitted"
        by_id = await client.get_task(created.task_id)
        by_ext = await client.get_task(ext)
        assert by_id.task_id == by_ext.task_id == created.task_id
        assert by_ext.external_task_id == ext
        second = await client.create_task(cat(external_task_id="my-own-id"))
        assert second.external_task_id == "my-own-id"
        listed = await client.list_tasks(page=1, page_size=10)
        assert [t.task_id for t in listed] == [second.task_id, created.task_id]  # newest first
        assert await client.list_tasks(page=2, page_size=10) == []
    assert env.sim.task_count() == 2
    assert env.sim.counters.creates_by_external_id[ext] == 1


@pytest.mark.anyio
async def test_finished_task_has_results(env: Env) -> None:
    async with env.client() as client:
        created = await client.create_task(cat(n=2, resolution="2k"))
        await anyio.sleep(0.4)
        done = await client.get_task(created.task_id)
    assert done.task_status == "succeed"
    assert len(done.result_images) == 2
    assert done.final_unit_deduction == "16"


@pytest.mark.anyio
async def test_element_id_arrives_exactly(env: Env) -> None:
    async with env.client() as client:
        created = await client.create_task(
            cat(prompt="Merge the people into <<<object_1>>>", element_list=[{"element_id": ELEMENT_ID}])
        )
    record = env.sim.get_task(created.task_id)
    assert record is not None
    assert record.element_ids == (ELEMENT_ID,)
    assert record.body["element_list"][0]["element_id"] == ELEMENT_ID


# --- authentication ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_jwt_auth_claims_and_token_reuse(env: Env) -> None:
    auth = JwtAuth(ACCESS_KEY, SECRET_KEY)
    async with env.client(auth=auth) as client:
        created = await client.create_task(cat())
        await client.get_task(created.task_id)
        await client.list_tasks()
    assert auth.signed_count == 1  # one signature served all three requests
    token = auth.authorization().split(" ", 1)[1]
    claims = jwt.decode(token, SECRET_KEY, algorithms=["HS256"])
    now = time.time()
    assert claims["iss"] == ACCESS_KEY
    assert abs(claims["exp"] - now - 1800) <= 2
    assert abs(claims["nbf"] - (now - 5)) <= 2


@pytest.mark.anyio
async def test_jwt_resigned_near_expiry(env: Env) -> None:
    # The client's clock starts 1760 s behind: its token is cached (1800 s left on its clock) and
    # still valid at the vendor (40 s left). Once its clock catches up only 40 s (< 60) are left,
    # so the next request must carry a freshly signed token, which the vendor accepts.
    offset = [-1760.0]
    auth = JwtAuth(ACCESS_KEY, SECRET_KEY, clock=lambda: time.time() + offset[0])
    async with env.client(auth=auth) as client:
        await client.list_tasks()
        first = auth.authorization()
        await client.list_tasks()
        assert auth.signed_count == 1
        offset[0] = 0.0
        await client.list_tasks()
        assert auth.signed_count == 2
        assert auth.authorization() != first
    assert env.sim.counters.lists == 3


class FixedHeader(Auth):
    def __init__(self, value: str) -> None:
        self.value = value

    def authorization(self) -> str:
        return self.value

    @property
    def kind(self) -> str:
        return "fixed"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("make_auth", "code", "requests"),
    [
        (lambda: FixedHeader("Basic abc"), 1000, 1),
        (lambda: FixedHeader(""), 1001, 1),
        (lambda: ApiKeyAuth("wrong-key"), 1002, 1),
        (lambda: JwtAuth(ACCESS_KEY, "wrong-secret-0123456789abcdef0123"), 1002, 1),
        (lambda: JwtAuth("unknown-ak", SECRET_KEY), 1002, 1),
        (lambda: JwtAuth(ACCESS_KEY, SECRET_KEY, clock=lambda: time.time() + 600), 1003, 1),
        # Expired: re-signed once (still with the wrong clock), then reported.
        (lambda: JwtAuth(ACCESS_KEY, SECRET_KEY, clock=lambda: time.time() - 3600), 1004, 2),
    ],
)
async def test_auth_failures(env: Env, make_auth: Callable[[], Auth], code: int, requests: int) -> None:
    async with env.client(auth=make_auth()) as client:
        with pytest.raises(KlingAuthError) as info:
            await client.get_task("anything")
    assert info.value.code == code
    assert info.value.http_status == 401
    assert info.value.hint  # says which setting to check
    assert env.sim.counters.queries == requests
    assert SECRET_KEY not in info.value.describe()


@pytest.mark.anyio
async def test_auth_failure_on_create_makes_no_task(env: Env) -> None:
    async with env.client(auth=ApiKeyAuth("wrong-key")) as client:
        with pytest.raises(KlingAuthError):
            await client.create_task(cat())
    assert env.sim.task_count() == 0
    assert env.sim.counters.create_requests == 1


# --- vendor error codes ------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("status", "code", "error_type"),
    [
        (429, 1102, KlingAccountError),
        (403, 1103, KlingPermissionError),
        (400, 1301, KlingPolicyError),
    ],
)
async def test_non_retryable_codes_on_create(
    env: Env, status: int, code: int, error_type: type[KlingError]
) -> None:
    env.sim.faults.fail_next(1, http_status=status, code=code, message=f"simulated {code}", kind="create")
    async with env.client() as client:
        with pytest.raises(error_type) as info:
            await client.create_task(cat())
    assert info.value.code == code
    assert f"simulated {code}" in str(info.value)
    assert info.value.request_id
    assert env.sim.counters.create_requests == 1  # not retried
    assert env.sim.task_count() == 0


@pytest.mark.anyio
async def test_unknown_task_is_not_found(env: Env) -> None:
    async with env.client() as client:
        with pytest.raises(KlingTaskNotFoundError) as info:
            await client.get_task("no-such-task")
    assert info.value.code == 1201
    assert env.sim.counters.queries == 1


@pytest.mark.anyio
async def test_vendor_side_validation_error_is_reported(env: Env) -> None:
    # A rule only the vendor can check (pixel size of a Base64 image) surfaces as 1201 with its message.
    import base64
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (100, 100)).save(buffer, format="PNG")
    tiny = base64.b64encode(buffer.getvalue()).decode()
    async with env.client() as client:
        with pytest.raises(KlingError) as info:
            await client.create_task(cat(image_list=[{"image": tiny}]))
    assert info.value.code == 1201
    assert "300" in str(info.value)
    assert env.sim.counters.create_requests == 1
    assert env.sim.task_count() == 0


# --- retries -----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_read_retried_through_503s(env: Env) -> None:
    async with env.client() as client:
        created = await client.create_task(cat())
        env.sim.faults.fail_next(3, http_status=503, code=5001, message="maintenance", kind="query")
        sleep = RecordingSleep()
        retry = RetryPolicy(max_attempts=5, base_delay=0.02, max_delay=1.0, jitter=False, sleep=sleep)
        async with env.client(retry=retry) as retrying:
            task = await retrying.get_task(created.task_id)
    assert task.task_id == created.task_id
    assert env.sim.counters.queries == 4  # three failures, then the answer
    assert sleep.pauses == [0.02, 0.04, 0.08]  # exponential backoff


@pytest.mark.anyio
async def test_read_gives_up_after_max_attempts(env: Env) -> None:
    env.sim.faults.fail_next(10, http_status=503, code=5001, message="maintenance", kind="list")
    async with env.client(retry=RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.02)) as client:
        with pytest.raises(KlingServerError) as info:
            await client.list_tasks()
    assert info.value.code == 5001
    assert info.value.retryable
    assert env.sim.counters.lists == 3


@pytest.mark.anyio
async def test_read_respects_the_deadline(env: Env) -> None:
    env.sim.faults.fail_next(50, http_status=504, code=5002, message="backlog", kind="list")
    retry = RetryPolicy(max_attempts=50, base_delay=0.1, max_delay=0.2, deadline=0.5, jitter=False)
    started = time.monotonic()
    async with env.client(retry=retry) as client:
        with pytest.raises(KlingServerError):
            await client.list_tasks()
    elapsed = time.monotonic() - started
    assert elapsed < 0.8
    assert 2 <= env.sim.counters.lists < 10  # stopped by the deadline, not by max_attempts


@pytest.mark.anyio
async def test_rate_limit_on_read_is_retried(env: Env) -> None:
    env.sim.faults.fail_next(2, http_status=429, code=1302, message="too fast", kind="list")
    async with env.client() as client:
        assert await client.list_tasks() == []
    assert env.sim.counters.lists == 3


@pytest.mark.anyio
@pytest.mark.parametrize(("status", "code"), [(400, 1200), (429, 1101), (403, 1103)])
async def test_non_retryable_read_is_not_retried(env: Env, status: int, code: int) -> None:
    env.sim.faults.fail_next(1, http_status=status, code=code, message="no", kind="list")
    async with env.client() as client:
        with pytest.raises(KlingError) as info:
            await client.list_tasks()
    assert info.value.code == code
    assert not info.value.retryable
    assert env.sim.counters.lists == 1


@pytest.mark.anyio
async def test_slow_read_times_out_then_succeeds(env: Env) -> None:
    env.sim.faults.delay_next(1, seconds=1.0, kind="list")
    started = time.monotonic()
    async with env.client(timeout=0.2) as client:
        assert await client.list_tasks() == []  # the first attempt timed out, the retry answered
    assert time.monotonic() - started < 1.0
    assert env.sim.counters.lists == 2


@pytest.mark.anyio
async def test_slow_read_past_timeout_raises_timeout(env: Env) -> None:
    env.sim.faults.delay_next(1, seconds=1.0, kind="query")
    async with env.client(timeout=0.2, retry=RetryPolicy(max_attempts=1)) as client:
        with pytest.raises(KlingTimeoutError):
            await client.get_task("x")


# --- create idempotency ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_lost_create_answer_makes_one_task(env: Env) -> None:
    env.sim.faults.lose_next_create()
    async with env.client() as client:
        task = await client.create_task(cat(external_task_id="lost-1"))
    assert env.sim.counters.creates_by_external_id["lost-1"] == 1  # looked up, not re-sent
    assert env.sim.task_count() == 1
    record = env.sim.get_task("lost-1")
    assert record is not None and task.task_id == record.task_id
    assert task.external_task_id == "lost-1"


@pytest.mark.anyio
async def test_lost_create_and_failed_lookup_still_one_task(env: Env) -> None:
    # The answer is lost and the lookup fails too: the create is re-sent with the same external
    # id, the vendor refuses the duplicate (1201), and the client returns the existing task.
    env.sim.faults.lose_next_create()
    env.sim.faults.fail_next(1, http_status=503, code=5001, message="maintenance", kind="query")
    async with env.client() as client:
        task = await client.create_task(cat())
    ext = task.external_task_id
    assert ext is not None
    assert env.sim.counters.creates_by_external_id[ext] == 2
    assert env.sim.task_count() == 1
    assert next(iter(env.sim.tasks)) == task.task_id


@pytest.mark.anyio
async def test_create_5001_then_ok_makes_one_task(env: Env) -> None:
    env.sim.faults.fail_next(1, http_status=503, code=5001, message="maintenance", kind="create")
    async with env.client() as client:
        task = await client.create_task(cat(external_task_id="retry-1"))
    assert env.sim.counters.creates_by_external_id["retry-1"] == 2  # looked up (not found), then re-sent
    assert env.sim.counters.queries_by_id["retry-1"] == 1
    assert env.sim.task_count() == 1
    assert task.external_task_id == "retry-1"


@pytest.mark.anyio
async def test_create_timeout_makes_one_task(env: Env) -> None:
    env.sim.faults.delay_next(1, seconds=0.6, kind="create")
    async with env.client(timeout=0.2) as client:
        task = await client.create_task(cat(external_task_id="slow-1"))
    await anyio.sleep(0.7)  # let the slow first attempt finish on the server side
    assert env.sim.task_count() == 1
    record = env.sim.get_task("slow-1")
    assert record is not None and record.task_id == task.task_id


@pytest.mark.anyio
async def test_create_server_errors_exhausted_say_how_to_find_the_task(env: Env) -> None:
    env.sim.faults.fail_next(20, http_status=500, code=5000, message="internal", kind="create")
    async with env.client(retry=RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.02)) as client:
        with pytest.raises(KlingServerError) as info:
            await client.create_task(cat(external_task_id="doomed-1"))
    assert env.sim.counters.creates_by_external_id["doomed-1"] == 3
    assert "doomed-1" in (info.value.hint or "")
    assert env.sim.task_count() == 0


@pytest.mark.anyio
async def test_reused_external_id_on_first_send_is_refused(env: Env) -> None:
    async with env.client() as client:
        await client.create_task(cat(external_task_id="dup-1"))
        with pytest.raises(KlingError) as info:
            await client.create_task(cat(external_task_id="dup-1"))
    assert info.value.code == 1201
    assert "dup-1" in str(info.value)
    assert env.sim.task_count() == 1


@pytest.mark.anyio
async def test_concurrency_limit_1303_is_retried_until_a_slot_frees(env: Env) -> None:
    env.sim.faults.set_concurrency_limit(1)
    retry = RetryPolicy(max_attempts=20, base_delay=0.05, max_delay=0.1, concurrency_min_delay=0.05)
    async with env.client(retry=retry) as client:
        first = await client.create_task(cat())
        second = await client.create_task(cat())  # waits for the first (0.3 s) to finish
    assert env.sim.task_count() == 2
    assert first.task_id != second.task_id
    ext = second.external_task_id
    assert ext is not None
    assert env.sim.counters.creates_by_external_id[ext] >= 2


@pytest.mark.anyio
async def test_concurrency_limit_exhausted_raises_rate_limit(env: Env) -> None:
    env.sim.faults.fail_next(10, http_status=429, code=1303, message="concurrency", kind="create")
    retry = RetryPolicy(max_attempts=3, base_delay=0.01, concurrency_min_delay=0.02, max_delay=0.05)
    async with env.client(retry=retry) as client:
        with pytest.raises(KlingRateLimitError) as info:
            await client.create_task(cat())
    assert info.value.code == 1303
    assert env.sim.counters.create_requests == 3
    assert env.sim.counters.queries == 0  # 1303 means no task was made: nothing to look up


# --- local validation --------------------------------------------------------------------------

REFUSED_LOCALLY = [
    cat(prompt=""),
    cat(prompt="x" * 2501),
    cat(model_name="kling-image-o1", resolution="4k"),
    cat(model_name="kling-image-o1", result_type="series"),
    cat(model_name="kling-v3-omni"),  # auto aspect ratio for pure text-to-image
    cat(n=10),
    cat(series_amount=3),
    cat(image_list=[{"image": "data:image/png;base64,iVBORw0KGgo="}]),
    cat(image_list=[{"image": "https://example.com/a.png"}] * 11),
    cat(prompt="<<<image_3>>>", image_list=[{"image": "https://example.com/a.png"}] * 2),
    cat(element_list=[{"element_id": 0}]),
    cat(callback_url="ftp://example.com/hook"),
]


@pytest.mark.anyio
@pytest.mark.parametrize("request_", REFUSED_LOCALLY, ids=range(len(REFUSED_LOCALLY)))
async def test_local_validation_sends_nothing(env: Env, request_: CreateImageRequest) -> None:
    async with env.client() as client:
        with pytest.raises(KlingValidationError):
            await client.create_task(request_)
    assert env.sim.counters.create_requests == 0
