"""SSRF: every spelling of a private address is refused, at creation and at send."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest
from sqlalchemy import func, select

from notify_worker.addresses import address_block_reason, literal_address
from notify_worker.models import notify_jobs

from .hostile import RawTarget, StaticLookup

# Each spelling and the reason the create-time answer must give.
BLOCKED = [
    ("http://127.0.0.1/", "loopback"),
    ("http://2130706433/", "numeric spelling of 127.0.0.1"),
    ("http://0x7f.1/", "numeric spelling of 127.0.0.1"),
    ("http://0x7f000001/", "numeric spelling of 127.0.0.1"),
    ("http://0177.0.0.1/", "numeric spelling of 127.0.0.1"),
    ("http://127.1/", "numeric spelling of 127.0.0.1"),
    ("http://017700000001/", "numeric spelling of 127.0.0.1"),
    ("http://10.0.0.1/", "private"),
    ("http://172.16.5.4/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://100.64.0.1/", "shared (CGNAT)"),
    ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
    ("http://169.254.1.1/", "link-local"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://224.0.0.1/", "multicast"),
    ("http://240.0.0.1/", "reserved"),
    ("http://255.255.255.255/", "reserved"),
    ("http://[::1]/", "loopback"),
    ("http://[::]/", "unspecified"),
    ("http://[fe80::1]/", "link-local"),
    ("http://[fc00::1]/", "private"),
    ("http://[ff02::1]/", "multicast"),
    ("http://[::ffff:127.0.0.1]/", "loopback, as IPv4-mapped 127.0.0.1"),
    ("http://[::ffff:7f00:1]/", "loopback, as IPv4-mapped 127.0.0.1"),
    ("http://[::127.0.0.1]/", "loopback, as IPv4-compatible 127.0.0.1"),
    ("http://[64:ff9b::a00:1]/", "private, as NAT64 10.0.0.1"),
    ("http://[2002:7f00:1::]/", "loopback, as 6to4 127.0.0.1"),
    ("http://[2002:a9fe:a9fe::1]/", "cloud metadata, as 6to4 169.254.169.254"),
    ("http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/", "loopback, as Teredo"),
    ("http://[fd00:ec2::254]/", "cloud metadata"),
    ("http://localhost/", "loopback"),
    ("http://metadata.internal/", "cloud metadata"),
]

LOOKUP = StaticLookup(
    {
        "localhost": ["127.0.0.1", "::1"],
        "metadata.internal": ["169.254.169.254"],
        "mixed.example": ["93.184.215.14", "10.1.2.3"],
        "public.example": ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"],
    }
)


async def _job_count(svc) -> int:
    async with svc.runtime.engine.connect() as conn:
        return await conn.scalar(select(func.count()).select_from(notify_jobs))


@pytest.mark.parametrize(
    ("spelling", "expected"),
    [
        ("2130706433", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("0x7F.0.0.0x1", "127.0.0.1"),
        ("127.0.0.1.", "127.0.0.1"),
        ("[::ffff:127.0.0.1]", "::ffff:7f00:1"),
        ("fe80::1%eth0", "fe80::1"),
    ],
)
def test_numeric_spellings_are_read_like_the_c_resolver(spelling, expected):
    assert literal_address(spelling) == ipaddress.ip_address(expected)


@pytest.mark.parametrize(
    "name", ["example.com", "1.2.3.4.5", "256.1.1.1", "08.1.1.1", "١٢٧.0.0.1"]
)
def test_names_are_not_mistaken_for_numbers(name):
    assert literal_address(name) is None


def test_public_addresses_and_allowed_networks_pass():
    public = [
        "93.184.215.14",
        "2606:2800:21f:cb07:6820:80da:af6b:8b2c",
        "::ffff:93.184.215.14",
        "64:ff9b::5db8:d70e",
    ]
    for text in public:
        assert address_block_reason(ipaddress.ip_address(text), ()) is None, text
    allowed = (ipaddress.ip_network("127.0.0.1/32"),)
    assert address_block_reason(ipaddress.ip_address("127.0.0.1"), allowed) is None
    assert (
        address_block_reason(ipaddress.ip_address("::ffff:127.0.0.1"), allowed) is None
    )
    assert (
        address_block_reason(ipaddress.ip_address("127.0.0.2"), allowed) == "loopback"
    )


async def test_each_blocked_spelling_is_refused_at_create_time(services):
    svc = await services.start(allowed_networks="", lookup=LOOKUP)
    for url, reason in BLOCKED:
        async with svc.session.post(
            f"{svc.base_url}/notify",
            json={"target_url": url, "payload": {"a": 1}},
            headers=svc.auth,
        ) as response:
            body = await response.json()
        assert response.status == 422, (url, body)
        [error] = body["detail"]
        assert error["loc"] == ["body", "target_url"]
        assert reason in error["msg"], (url, error["msg"])
    assert await _job_count(svc) == 0


async def test_a_name_with_one_private_answer_is_refused(services):
    svc = await services.start(allowed_networks="", lookup=LOOKUP)
    async with svc.session.post(
        f"{svc.base_url}/notify",
        json={"target_url": "https://mixed.example/hook", "payload": {}},
        headers=svc.auth,
    ) as response:
        body = await response.json()
    assert response.status == 422
    assert "10.1.2.3" in body["detail"][0]["msg"]
    assert await _job_count(svc) == 0


async def test_a_name_that_turns_private_at_send_time_gets_no_connection(
    services, raw_target
):
    """Public when the job is created, 127.0.0.2 when it is sent: no request."""

    async def answer(reader, writer):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    listener: RawTarget = await raw_target(answer, host="127.0.0.2")
    lookup = StaticLookup({"rebind.example": ["93.184.215.14"]})
    svc = await services.start(
        allowed_networks="127.0.0.1/32", lookup=lookup, run_worker=False
    )
    job = await svc.create(f"http://rebind.example:{listener.port}/hook")
    lookup.answers["rebind.example"] = ["127.0.0.2"]
    # A second process whose worker sends it, with the table's new answer.
    await services.start(allowed_networks="127.0.0.1/32", lookup=lookup)
    done = await svc.wait_status(job["id"])
    assert done["status"] == "failed"
    assert done["error_message"] == (
        "blocked address rebind.example (127.0.0.2): loopback"
    )
    assert listener.connections == 0


async def test_the_connection_goes_to_the_address_that_was_checked(
    services, raw_target
):
    """A name the table maps to an allowed loopback address is delivered there."""

    async def answer(reader, writer):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    listener = await raw_target(answer)
    lookup = StaticLookup({"hooks.example": ["127.0.0.1"]})
    svc = await services.start(allowed_networks="127.0.0.1/32", lookup=lookup)
    job = await svc.create(f"http://hooks.example:{listener.port}/hook")
    done = await svc.wait_status(job["id"])
    assert done["status"] == "success"
    assert listener.connections == 1
    assert "hooks.example" in lookup.asked


async def test_literals_are_checked_at_send_time(services, engine, raw_target):
    """A row that holds a blocked literal (written past the API) still fails."""
    from notify_worker import service

    async def answer(reader, writer):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    listener = await raw_target(answer, host="127.0.0.2")
    svc = await services.start(allowed_networks="127.0.0.1/32", lookup=StaticLookup())
    urls = [
        f"http://127.0.0.2:{listener.port}/",
        f"http://[::ffff:127.0.0.2]:{listener.port}/",
        f"http://2130706434:{listener.port}/",
        f"http://127.2:{listener.port}/",
    ]
    ids = []
    async with engine.begin() as conn:
        for url in urls:
            job = await service.create_job(conn, svc.user_id, url, "{}")
            ids.append(str(job.id))
    svc.runtime.wake()
    for job_id in ids:
        done = await svc.wait_status(job_id)
        assert done["status"] == "failed"
        assert done["error_message"].startswith("blocked address"), done
    assert listener.connections == 0


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
async def test_redirects_are_not_followed(services, raw_target, code):
    second_hits = []

    async def second(reader, writer):
        second_hits.append(1)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    other = await raw_target(second, host="127.0.0.2")

    async def redirect(reader, writer):
        location = other.url("/stolen").encode()
        writer.write(
            f"HTTP/1.1 {code} Moved\r\nContent-Length: 0\r\n".encode()
            + b"Location: "
            + location
            + b"\r\n\r\n"
        )

    first = await raw_target(redirect)
    svc = await services.start(allowed_networks="127.0.0.1/32", lookup=StaticLookup())
    job = await svc.create(first.url("/hook"))
    done = await svc.wait_status(job["id"])
    assert done["status"] == "failed"
    assert done["error_message"] == f"redirect not followed ({code})"
    await asyncio.sleep(0)
    assert other.connections == 0 and not second_hits


async def test_name_resolution_counts_against_the_attempt_deadline(services):
    lookup = StaticLookup({"slow.example": ["93.184.215.14"]})
    svc = await services.start(
        allowed_networks="127.0.0.1/32", lookup=lookup, run_worker=False, timeout_secs=1
    )
    job = await svc.create("http://slow.example/hook")

    class SlowLookup(StaticLookup):
        async def __call__(self, host, port):
            await asyncio.sleep(30)
            return await super().__call__(host, port)

    await services.start(
        allowed_networks="127.0.0.1/32",
        lookup=SlowLookup(lookup.answers),
        timeout_secs=1,
    )
    done = await svc.wait_status(job["id"], timeout=10)
    assert done["status"] == "failed"
    assert done["error_message"] == "timeout after 1s"


async def test_the_system_lookup_runs_off_the_event_loop(monkeypatch):
    """No test asks real DNS: getaddrinfo itself is replaced, and records its thread."""
    import socket
    import threading

    from notify_worker.delivery import system_lookup

    threads = []

    def recording_getaddrinfo(host, port, *args, **kwargs):
        threads.append(threading.current_thread())
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.9", port))]

    monkeypatch.setattr(socket, "getaddrinfo", recording_getaddrinfo)
    assert await system_lookup("any.example", 80) == [ipaddress.ip_address("127.0.0.9")]
    assert threads and threads[0] is not threading.main_thread()
