"""http(s) sources against real loopback servers: address policy, redirects, caps, timeouts, retries."""

from __future__ import annotations

import asyncio
import ipaddress
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from capability_service.core.config import Settings
from capability_service.sources.errors import SourceError
from capability_service.sources.fetch import FetchLimits, SourceFetcher, host_allowed
from capability_service.sources.netguard import AddressPolicy
from tests.sources import loopback
from tests.support.servers import free_port

DATA = Path(__file__).parent.parent / "data"
JPEG = (DATA / "rocket.jpg").read_bytes()
# Lets a test server on 127.0.0.2 stand in for "a public host" while the policy stays on.
PUBLIC_STAND_IN = (ipaddress.ip_network("127.0.0.2/32"),)

FetcherFactory = Callable[..., SourceFetcher]


@pytest.fixture
async def make_fetcher() -> AsyncIterator[FetcherFactory]:
    made: list[SourceFetcher] = []

    def factory(
        *, allow_private: bool = False, exempt: tuple[ipaddress.IPv4Network, ...] = (), **kwargs: object
    ) -> SourceFetcher:
        limits = kwargs.pop("limits", FetchLimits(total_timeout=10.0, backoff=0.05))
        fetcher = SourceFetcher(
            limits,  # type: ignore[arg-type]
            policy=AddressPolicy(allow_private=allow_private, exempt=exempt),
            **kwargs,  # type: ignore[arg-type]
        )
        made.append(fetcher)
        return fetcher

    yield factory
    for fetcher in made:
        await fetcher.close()


async def refused(fetcher: SourceFetcher, url: str) -> SourceError:
    with pytest.raises(SourceError) as info:
        await fetcher.fetch(url)
    return info.value


# --- address policy -------------------------------------------------------------------------


async def test_policy_off_fetches_from_loopback(make_fetcher: FetcherFactory) -> None:
    with loopback.serve({"/a.jpg": loopback.image(JPEG)}) as server:
        fetched = await make_fetcher(allow_private=True).fetch(server.url + "/a.jpg?v=1")
    assert fetched.data == JPEG
    assert fetched.origin == server.url + "/a.jpg"


async def test_policy_on_refuses_loopback_without_connecting(make_fetcher: FetcherFactory) -> None:
    with loopback.serve({"/a.jpg": loopback.image(JPEG)}) as server:
        error = await refused(make_fetcher(), server.url + "/a.jpg")
        assert server.stats.connections == 0
    assert error.rule == "private-address"
    assert str(error).startswith("127.0.0.1 is a loopback address")


async def test_localhost_name_is_checked_after_resolution(make_fetcher: FetcherFactory) -> None:
    with loopback.serve({"/a.jpg": loopback.image(JPEG)}) as server:
        url = f"http://localhost:{server.port}/a.jpg"
        error = await refused(make_fetcher(), url)
        assert server.stats.connections == 0
        assert error.rule == "private-address"
        assert str(error).startswith("localhost resolves to a loopback address")
        assert (await make_fetcher(allow_private=True).fetch(url)).data == JPEG


@pytest.mark.parametrize(
    ("host", "shown"),
    [
        ("[::ffff:127.0.0.1]", "IPv4 127.0.0.1"),  # IPv4-mapped
        ("[::ffff:7f00:1]", "IPv4 127.0.0.1"),
        ("2130706433", "127.0.0.1"),  # the integer form resolves to 127.0.0.1
        ("127.1", "127.0.0.1"),
        ("0.0.0.0", "unspecified"),
    ],
)
async def test_other_spellings_of_loopback_are_refused(make_fetcher: FetcherFactory, host: str, shown: str) -> None:
    with loopback.serve({"/a.jpg": loopback.image(JPEG)}) as server:
        error = await refused(make_fetcher(), f"http://{host}:{server.port}/a.jpg")
        assert server.stats.connections == 0
    assert error.rule == "private-address"
    assert shown in str(error)


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
        ("http://10.0.0.5/a.jpg", "10.0.0.5 is a private address"),
        ("http://100.64.0.1/a.jpg", "carrier-grade NAT"),
        ("http://224.0.0.1/a.jpg", "multicast"),
        ("http://[::]/a.jpg", "unspecified"),
        ("http://[fd00::1]/a.jpg", "fd00::1 is a private address"),
        ("http://[64:ff9b::a00:5]/a.jpg", "IPv4 10.0.0.5"),  # NAT64
        ("http://[2002:a9fe:a9fe::1]/a.jpg", "IPv4 169.254.169.254"),  # 6to4
    ],
)
async def test_non_public_literals_are_refused(make_fetcher: FetcherFactory, url: str, kind: str) -> None:
    started = time.monotonic()
    error = await refused(make_fetcher(), url)
    assert error.rule == "private-address"
    assert kind in str(error)
    # Refused before any connection attempt, so nothing waits on an unroutable address.
    assert time.monotonic() - started < 1.0


async def test_redirect_chain_ending_on_a_private_address_is_refused(make_fetcher: FetcherFactory) -> None:
    with loopback.serve({"/secret.jpg": loopback.image(JPEG)}) as private:
        hops = {
            "/start": loopback.redirect("/hop1", 301),
            "/hop1": loopback.redirect("/hop2", 307),
            "/hop2": loopback.redirect(private.url + "/secret.jpg", 302),
        }
        with loopback.serve(hops, host="127.0.0.2") as public:
            error = await refused(make_fetcher(exempt=PUBLIC_STAND_IN), public.url + "/start")
            assert public.stats.requests == ["/start", "/hop1", "/hop2"]
            assert private.stats.connections == 0
    assert error.rule == "private-address"
    assert "127.0.0.1" in str(error)


async def test_redirect_to_metadata_by_name_is_refused(make_fetcher: FetcherFactory) -> None:
    async def resolver(host: str, port: int) -> list[str]:
        return {"cdn.test": ["127.0.0.2"], "metadata.test": ["169.254.169.254"]}[host]

    with loopback.serve({"/a": loopback.redirect("http://metadata.test/latest")}, host="127.0.0.2") as server:
        fetcher = make_fetcher(exempt=PUBLIC_STAND_IN, resolver=resolver)
        error = await refused(fetcher, f"http://cdn.test:{server.port}/a")
    assert str(error) == "metadata.test resolves to a link-local address 169.254.169.254"


async def test_policy_allows_public_stand_in_and_follows_redirects(make_fetcher: FetcherFactory) -> None:
    routes = {"/a": loopback.redirect("/b"), "/b": loopback.image(JPEG)}
    with loopback.serve(routes, host="127.0.0.2") as server:
        fetched = await make_fetcher(exempt=PUBLIC_STAND_IN).fetch(server.url + "/a")
    assert fetched.data == JPEG
    assert fetched.origin == server.url + "/b"


async def test_checked_address_is_the_connected_address(make_fetcher: FetcherFactory) -> None:
    """DNS rebinding: the name answers "public" once, then "private". Each connection resolves once
    and connects to what it checked, so the second answer is refused, never connected to."""
    answers = [["127.0.0.2"], ["127.0.0.1"]]
    calls: list[str] = []

    async def rebinding(host: str, port: int) -> list[str]:
        calls.append(host)
        return answers[min(len(calls), len(answers)) - 1]

    port = free_port()
    with (
        loopback.serve({"/a.jpg": loopback.image(JPEG, close=True)}, host="127.0.0.2", port=port) as public,
        loopback.serve({"/a.jpg": loopback.image(b"private")}, host="127.0.0.1", port=port) as private,
    ):
        fetcher = make_fetcher(exempt=PUBLIC_STAND_IN, resolver=rebinding)
        assert (await fetcher.fetch(f"http://rebind.test:{port}/a.jpg")).data == JPEG
        error = await refused(fetcher, f"http://rebind.test:{port}/a.jpg")
        assert public.stats.connections == 1
        assert private.stats.connections == 0
    assert calls == ["rebind.test", "rebind.test"]
    assert str(error) == "rebind.test resolves to a loopback address 127.0.0.1"


async def test_name_with_one_private_answer_is_refused(make_fetcher: FetcherFactory) -> None:
    async def mixed(host: str, port: int) -> list[str]:
        return ["127.0.0.2", "10.1.2.3"]

    with loopback.serve({"/a.jpg": loopback.image(JPEG)}, host="127.0.0.2") as server:
        error = await refused(
            make_fetcher(exempt=PUBLIC_STAND_IN, resolver=mixed), f"http://mixed.test:{server.port}/a.jpg"
        )
        assert server.stats.connections == 0
    assert "private address 10.1.2.3" in str(error)


async def test_unresolvable_host(make_fetcher: FetcherFactory) -> None:
    error = await refused(make_fetcher(), "http://no-such-host.invalid/a.jpg")
    assert error.rule == "dns"


# --- URL rules ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("http://user:pass@example.com/a.jpg", "userinfo"),
        ("http://user@example.com/a.jpg", "userinfo"),
        ("ftp://example.com/a.jpg", "scheme"),
        ("gopher://example.com/", "scheme"),
        ("javascript:alert(1)", "scheme"),
        ("example.com/a.jpg", "scheme"),
        ("http:///a.jpg", "url"),
        ("http://" + "a" * 300 + ".com/a.jpg", "url"),
        ("http://a..b.com/a.jpg", "url"),
    ],
)
async def test_url_rules(make_fetcher: FetcherFactory, url: str, rule: str) -> None:
    assert (await refused(make_fetcher(allow_private=True), url)).rule == rule


@pytest.mark.parametrize("target", ["file:///etc/passwd", "data:image/png;base64,iVBORw0KGgo=", "ftp://x/a"])
async def test_redirect_to_another_scheme_is_refused(make_fetcher: FetcherFactory, target: str) -> None:
    with loopback.serve({"/a": loopback.redirect(target)}) as server:
        error = await refused(make_fetcher(allow_private=True), server.url + "/a")
    assert error.rule == "scheme"


async def test_redirect_with_userinfo_is_refused(make_fetcher: FetcherFactory) -> None:
    with loopback.serve({"/a": loopback.redirect("http://admin:pw@127.0.0.1:1/")}) as server:
        assert (await refused(make_fetcher(allow_private=True), server.url + "/a")).rule == "userinfo"


async def test_at_most_five_redirects(make_fetcher: FetcherFactory) -> None:
    routes: dict[str, loopback.Route] = {f"/r{i}": loopback.redirect(f"/r{i + 1}") for i in range(6)}
    routes["/r5"] = loopback.image(JPEG)
    routes["/r6"] = loopback.image(JPEG)
    with loopback.serve(routes) as server:
        fetcher = make_fetcher(allow_private=True)
        assert (await fetcher.fetch(server.url + "/r0")).data == JPEG  # exactly five redirects
        routes["/r5"] = loopback.redirect("/r6")
        error = await refused(fetcher, server.url + "/r0")
    assert error.rule == "redirects"


async def test_allowed_hosts(make_fetcher: FetcherFactory) -> None:
    with loopback.serve({"/a.jpg": loopback.image(JPEG), "/away": loopback.redirect("/a.jpg")}) as server:
        fetcher = make_fetcher(allow_private=True, allowed_hosts=["localhost"])
        assert (await fetcher.fetch(f"http://localhost:{server.port}/a.jpg")).data == JPEG
        error = await refused(fetcher, server.url + "/a.jpg")
        assert error.rule == "host-not-allowed"
        # A redirect from an allowed host to one that is not is refused as well.
        with loopback.serve({"/r": loopback.redirect(server.url + "/a.jpg")}) as other:
            error = await refused(fetcher, f"http://localhost:{other.port}/r")
        assert error.rule == "host-not-allowed"


def test_host_allowed_patterns() -> None:
    allowed = ["cdn.example.com", "*.ozone.ru"]
    assert host_allowed("cdn.example.com", allowed)
    assert host_allowed("CDN.Example.com.", allowed)
    assert host_allowed("ir.ozone.ru", allowed)
    assert host_allowed("a.b.ozone.ru", allowed)
    assert not host_allowed("ozone.ru", allowed)
    assert not host_allowed("evilozone.ru", allowed)
    assert not host_allowed("example.com", allowed)
    assert not host_allowed("cdn.example.com.evil.net", allowed)


# --- body ------------------------------------------------------------------------------------

CAP = 256 * 1024


def capped() -> FetchLimits:
    return FetchLimits(max_bytes=CAP, total_timeout=10.0, backoff=0.05)


@pytest.mark.parametrize(
    "route",
    [
        loopback.chunked(JPEG[:64], 4 * CAP, claimed_length=1000),  # false Content-Length
        loopback.chunked(JPEG[:64], 4 * CAP),  # no Content-Length
        loopback.close_delimited(JPEG[:64], 4 * CAP),  # no length at all
        loopback.gzip_bomb(JPEG[:64], 64 * CAP),  # 16 MB inflated from a few KB
    ],
    ids=["false-length", "chunked", "close-delimited", "gzip-bomb"],
)
async def test_byte_cap_while_streaming(make_fetcher: FetcherFactory, route: loopback.Route) -> None:
    with loopback.serve({"/big": route}) as server:
        error = await refused(make_fetcher(allow_private=True, limits=capped()), server.url + "/big")
    assert error.rule == "too-large"
    assert str(CAP) in str(error)


async def test_declared_length_over_cap_is_refused_before_reading(make_fetcher: FetcherFactory) -> None:
    body = JPEG[:64] + b"\0" * (2 * CAP)
    with loopback.serve({"/big": loopback.image(body)}) as server:
        error = await refused(make_fetcher(allow_private=True, limits=capped()), server.url + "/big")
    assert error.rule == "too-large"
    assert f"is {len(body)} bytes" in str(error)


async def test_gzip_body_within_cap_is_inflated(make_fetcher: FetcherFactory) -> None:
    with loopback.serve({"/z": loopback.gzip_bomb(JPEG, len(JPEG))}) as server:
        fetched = await make_fetcher(allow_private=True, limits=capped()).fetch(server.url + "/z")
    assert fetched.data == JPEG


async def test_body_must_be_an_image(make_fetcher: FetcherFactory) -> None:
    page = b"<!DOCTYPE html><html><body>" + b"x" * 1_000_000 + b"</body></html>"
    routes = {"/page": loopback.image(page), "/empty": loopback.image(b"")}
    with loopback.serve(routes) as server:
        fetcher = make_fetcher(allow_private=True)
        error = await refused(fetcher, server.url + "/page")
        assert error.rule == "not-an-image"
        assert "HTML page" in str(error)
        assert (await refused(fetcher, server.url + "/empty")).rule == "not-an-image"


async def test_slow_drip_stops_at_the_total_timeout(make_fetcher: FetcherFactory) -> None:
    limits = FetchLimits(total_timeout=1.0, connect_timeout=1.0)
    with loopback.serve({"/drip": loopback.slow_drip(JPEG[:64], interval=0.05)}) as server:
        started = time.monotonic()
        error = await refused(make_fetcher(allow_private=True, limits=limits), server.url + "/drip")
        elapsed = time.monotonic() - started
    assert error.rule == "timeout"
    assert 0.9 <= elapsed < 2.0


# --- retries and concurrency ----------------------------------------------------------------


async def test_retries_5xx_then_succeeds(make_fetcher: FetcherFactory) -> None:
    with loopback.serve({"/a.jpg": loopback.flaky(2, JPEG)}) as server:
        fetched = await make_fetcher(allow_private=True).fetch(server.url + "/a.jpg")
        assert server.stats.hits("/a.jpg") == 3
    assert fetched.data == JPEG


async def test_gives_up_after_retries_on_5xx(make_fetcher: FetcherFactory) -> None:
    with loopback.serve({"/a.jpg": loopback.status(502)}) as server:
        error = await refused(make_fetcher(allow_private=True), server.url + "/a.jpg")
        assert server.stats.hits("/a.jpg") == 3
    assert error.rule == "http-status"
    assert "HTTP 502" in str(error)


@pytest.mark.parametrize("code", [403, 404, 410])
async def test_4xx_is_not_retried(make_fetcher: FetcherFactory, code: int) -> None:
    with loopback.serve({"/a.jpg": loopback.status(code)}) as server:
        error = await refused(make_fetcher(allow_private=True), server.url + "/a.jpg")
        assert server.stats.hits("/a.jpg") == 1
    assert f"HTTP {code}" in str(error)


async def test_dropped_connection_is_retried(make_fetcher: FetcherFactory) -> None:
    with loopback.serve({"/a.jpg": loopback.drop_then_serve(JPEG)}) as server:
        fetched = await make_fetcher(allow_private=True).fetch(server.url + "/a.jpg")
        assert server.stats.hits("/a.jpg") == 2
    assert fetched.data == JPEG


async def test_connection_refused(make_fetcher: FetcherFactory) -> None:
    error = await refused(make_fetcher(allow_private=True), f"http://127.0.0.1:{free_port()}/a.jpg")
    assert error.rule == "connect"


async def test_concurrency_is_bounded(make_fetcher: FetcherFactory) -> None:
    stats = loopback.Stats()
    with loopback.serve({"/a.jpg": loopback.counted(JPEG, stats, lambda: time.sleep(0.2))}) as server:
        fetcher = make_fetcher(allow_private=True, limits=FetchLimits(max_concurrency=2, total_timeout=10.0))
        results = await asyncio.gather(*(fetcher.fetch(f"{server.url}/a.jpg?i={i}") for i in range(6)))
    assert all(result.data == JPEG for result in results)
    assert stats.max_active == 2


async def test_a_slow_host_holds_at_most_its_share_of_the_slots(make_fetcher: FetcherFactory) -> None:
    slow_stats, release = loopback.Stats(), threading.Event()
    routes = {
        "/slow.jpg": loopback.counted(JPEG, slow_stats, lambda: release.wait(60)),
        "/fast.jpg": loopback.image(JPEG),
    }
    fetcher = make_fetcher(
        allow_private=True, limits=FetchLimits(max_concurrency=3, max_per_host=2, total_timeout=60.0)
    )
    try:
        with loopback.serve(routes) as server:
            # `localhost` and `127.0.0.1` are two hosts to the fetcher, one server here.
            slow = [
                asyncio.create_task(fetcher.fetch(f"http://localhost:{server.port}/slow.jpg?i={i}")) for i in range(5)
            ]
            async with asyncio.timeout(10):
                while slow_stats.active < 2:  # polling the server's count: the two slow downloads have begun
                    await asyncio.sleep(0.01)
            fast = await asyncio.gather(*(fetcher.fetch(f"{server.url}/fast.jpg?i={i}") for i in range(3)))
            assert all(result.data == JPEG for result in fast)
            assert not any(task.done() for task in slow)
            release.set()
            assert all(result.data == JPEG for result in await asyncio.gather(*slow))
        assert slow_stats.max_active == 2
    finally:
        release.set()


async def test_from_settings(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(
        source_allow_private_networks=False,
        source_allowed_hosts="localhost, cdn.example.com",
        source_max_bytes=4096,
        source_max_concurrency=3,
        source_max_per_host=2,
    )
    fetcher = SourceFetcher.from_settings(settings)
    try:
        assert fetcher.allowed_hosts == ("localhost", "cdn.example.com")
        assert fetcher.limits.max_bytes == 4096
        assert fetcher.limits.max_concurrency == 3
        assert fetcher.limits.max_per_host == 2
        with loopback.serve({"/a.jpg": loopback.image(JPEG)}) as server:
            error = await refused(fetcher, f"http://localhost:{server.port}/a.jpg")
            assert server.stats.connections == 0
        assert error.rule == "private-address"
    finally:
        await fetcher.close()


async def test_next_address_is_tried_when_one_refuses_connections(make_fetcher: FetcherFactory) -> None:
    async def dual_stack(host: str, port: int) -> list[str]:
        return ["::1", "127.0.0.1"]  # nothing listens on ::1 at this port

    with loopback.serve({"/a.jpg": loopback.image(JPEG)}) as server:
        fetcher = make_fetcher(allow_private=True, resolver=dual_stack)
        assert (await fetcher.fetch(f"http://dual.test:{server.port}/a.jpg")).data == JPEG
        # With the policy on, both answers are checked before either is tried.
        error = await refused(make_fetcher(resolver=dual_stack), f"http://dual.test:{server.port}/a.jpg")
        assert str(error) == "dual.test resolves to a loopback address ::1"
    assert server.stats.connections == 1
