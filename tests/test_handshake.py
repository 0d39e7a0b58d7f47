"""Unit tests of common.http11 and common.handshake: parsing and decisions, no sockets."""

import pytest

from common.exceptions import (
    InvalidHandshake,
    InvalidHeader,
    InvalidHost,
    InvalidMessage,
    InvalidOrigin,
    InvalidStatus,
    InvalidUpgrade,
    NegotiationError,
)
from common.handshake import (
    Accept,
    Agreement,
    accept_key,
    accept_request,
    accept_response,
    build_request,
    check_host,
    check_origin,
    check_request,
    check_response,
    generate_key,
    host_name,
    select_subprotocol,
)
from common.http11 import MAX_HEADERS, Headers, error_response, parse_request, parse_response

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455 §1.3: the accept value of KEY

GOOD = (
    "GET /chat HTTP/1.1\r\n"
    "Host: server.example.com\r\n"
    "Upgrade: websocket\r\n"
    "Connection: Upgrade\r\n"
    f"Sec-WebSocket-Key: {KEY}\r\n"
    "Origin: http://example.com\r\n"
    "Sec-WebSocket-Protocol: chat, superchat\r\n"
    "Sec-WebSocket-Version: 13\r\n\r\n"
)


def request(text: str = GOOD, **replace: str):
    for old, new in replace.items():
        text = text.replace(old.replace("_", "-"), new)
    return parse_request(text.encode())


def test_accept_key_matches_the_rfc_example():
    """RFC 6455 §1.3: the sample key gives the sample accept value."""
    assert accept_key(KEY) == ACCEPT


def test_rfc_example_request_is_accepted():
    """§1.3's client handshake passes validation and yields its key."""
    req = request()
    assert (req.method, req.path) == ("GET", "/chat")
    assert check_request(req) == KEY


def test_header_names_and_tokens_are_case_insensitive():
    """§4.2.1: Upgrade and Connection are compared case-insensitively, as token lists."""
    req = request(GOOD.replace("Upgrade: websocket", "uPgRaDe: WebSocket").replace("Connection: Upgrade", "connection: keep-alive, UPGRADE"))
    assert check_request(req) == KEY


@pytest.mark.parametrize(
    "old, new, error, status",
    [
        ("GET /chat", "POST /chat", None, 405),
        ("Upgrade: websocket\r\n", "", InvalidUpgrade, 426),
        ("Upgrade: websocket", "Upgrade: h2c", InvalidUpgrade, 426),
        ("Connection: Upgrade", "Connection: keep-alive", InvalidUpgrade, 426),
        ("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8", InvalidUpgrade, 426),
        ("Sec-WebSocket-Version: 13\r\n", "", InvalidUpgrade, 426),
        ("Host: server.example.com\r\n", "", InvalidHeader, 400),
        (f"Sec-WebSocket-Key: {KEY}\r\n", "", InvalidHeader, 400),
        (KEY, "not base64!", InvalidHeader, 400),
        (KEY, "c2hvcnQ=", InvalidHeader, 400),
        (f"Sec-WebSocket-Key: {KEY}\r\n", f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Key: {KEY}\r\n", InvalidHeader, 400),
        ("Origin:", "Content-Length: 5\r\nOrigin:", InvalidHeader, 400),
    ],
)
def test_invalid_requests_get_the_right_status(old, new, error, status):
    """§4.2.1 and §4.4: each defect maps to one HTTP status."""
    req = request(GOOD.replace(old, new))
    with pytest.raises(error or Exception) as info:
        check_request(req)
    assert info.value.status == status


@pytest.mark.parametrize(
    "old, new",
    [
        ("Upgrade: websocket\r\n", ""),
        ("Connection: Upgrade", "Connection: keep-alive"),
        ("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 12"),
        ("Sec-WebSocket-Version: 13\r\n", ""),
    ],
    ids=["no-upgrade", "connection-keep-alive", "version-12", "no-version"],
)
def test_every_426_names_the_upgrade_and_the_version(old, new):
    """RFC 9110 §15.5.22 and §7.8: a 426 sends Upgrade with Connection: Upgrade; §4.4: and version 13."""
    with pytest.raises(InvalidUpgrade) as info:
        check_request(request(GOOD.replace(old, new)))
    headers = Headers(info.value.headers)
    assert headers.get_all("Upgrade") == ["websocket"]
    assert headers.tokens("Connection") == ["upgrade"]
    assert headers.get_all("Sec-WebSocket-Version") == ["13"]


def test_error_response_says_close_in_the_same_connection_header():
    """One Connection header: the caller's options (Upgrade for a 426) and close, which every error answer ends with."""
    def headers(answer: bytes) -> Headers:
        return parse_response(answer[: answer.index(b"\r\n\r\n") + 4]).headers

    upgrade = headers(error_response(426, "Upgrade Required", [("Upgrade", "websocket"), ("Connection", "Upgrade")]))
    assert upgrade.get_all("Connection") == ["Upgrade, close"]
    assert upgrade.get_all("Upgrade") == ["websocket"]
    assert headers(error_response(400, "Bad Request")).get_all("Connection") == ["close"]


AMBIGUOUS_FRAMINGS = {
    "cl-0-then-14": "Content-Length: 0\r\nContent-Length: 14\r\n",
    "cl-14-then-0": "Content-Length: 14\r\nContent-Length: 0\r\n",
    "cl-0-twice": "Content-Length: 0\r\nContent-Length: 0\r\n",
    "cl-list": "Content-Length: 0, 14\r\n",
    "cl-list-identical": "Content-Length: 0, 0\r\n",
    "cl-trailing-comma": "Content-Length: 0,\r\n",
    "cl-empty": "Content-Length:\r\n",
    "cl-plus": "Content-Length: +0\r\n",
    "cl-negative": "Content-Length: -1\r\n",
    "cl-hex": "Content-Length: 0x0\r\n",
    "cl-superscript-two": "Content-Length: \xb2\r\n",  # str.isdigit() says yes, int() says no
    "cl-5000-digits": "Content-Length: " + "9" * 5000 + "\r\n",  # past int()'s 4300-digit limit
    "te-then-cl": "Transfer-Encoding: chunked\r\nContent-Length: 0\r\n",
    "cl-then-te": "Content-Length: 0\r\nTransfer-Encoding: chunked\r\n",
    "te-not-chunked": "Transfer-Encoding: gzip\r\n",
    "te-chunked-not-last": "Transfer-Encoding: chunked, gzip\r\n",
}


@pytest.mark.parametrize("framing", AMBIGUOUS_FRAMINGS.values(), ids=list(AMBIGUOUS_FRAMINGS))
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_ambiguous_body_framing_is_refused_with_400(framing, method):
    """RFC 9112 §6.3: repeated, listed, malformed or conflicting framing headers are an error, whatever the method."""
    head = GOOD.replace("GET", method).replace("Origin:", framing + "Origin:")
    with pytest.raises(InvalidMessage) as info:
        parse_request(head.encode("latin-1"))
    assert info.value.status == 400


@pytest.mark.parametrize(
    "framing",
    ["Content-Length: 14\r\n", "Content-Length: 1\r\n", "Transfer-Encoding: chunked\r\n"],
)
def test_a_handshake_with_a_body_is_refused_with_400(framing):
    """§4.1 sends no body: bytes after the head would be read as frames, so any announced body is refused."""
    req = request(GOOD.replace("Origin:", framing + "Origin:"))
    with pytest.raises(InvalidHeader) as info:
        check_request(req)
    assert info.value.status == 400


@pytest.mark.parametrize("framing", ["Content-Length: 0\r\n", "Content-Length: 00\r\n"])
def test_a_handshake_that_announces_an_empty_body_is_accepted(framing):
    """RFC 9112 §6.3: a single Content-Length of zero is an empty body, which a handshake may state."""
    assert check_request(request(GOOD.replace("Origin:", framing + "Origin:"))) == KEY


@pytest.mark.parametrize(
    "head, status",
    [
        (b"GET /chat HTTP/1.0\r\nHost: x\r\n\r\n", 400),
        (b"garbage\r\n\r\n", 400),
        (b"GET chat HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", 400),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * (MAX_HEADERS + 1) + b"\r\n", 431),
    ],
)
def test_malformed_or_oversized_heads_are_refused(head, status):
    """Bounded request line, header line and header count; HTTP/1.1 only."""
    with pytest.raises(InvalidMessage) as info:
        parse_request(head)
    assert info.value.status == status


def test_headers_are_a_case_insensitive_multidict():
    headers = Headers([("Host", "a"), ("X-Thing", "1"), ("x-thing", "2")])
    assert headers["HOST"] == "a"
    assert headers.get_all("X-THING") == ["1", "2"]
    assert "x-missing" not in headers and headers.get("x-missing") is None
    with pytest.raises(KeyError):
        headers["x-missing"]


@pytest.mark.parametrize(
    "origin_header, allowed, ok",
    [
        ("Origin: http://example.com\r\n", None, True),
        ("Origin: http://example.com\r\n", ["http://example.com"], True),
        ("Origin: http://evil.example\r\n", ["http://example.com"], False),
        ("", ["http://example.com"], False),
        ("", [None], True),
        ("Origin: null\r\n", ["null"], True),
    ],
)
def test_origin_check(origin_header, allowed, ok):
    """§10.2: servers may refuse origins they do not expect, with 403."""
    req = request(GOOD.replace("Origin: http://example.com\r\n", origin_header))
    if ok:
        check_origin(req.headers, allowed)
    else:
        with pytest.raises(InvalidOrigin) as info:
            check_origin(req.headers, allowed)
        assert info.value.status == 403


@pytest.mark.parametrize(
    "value, name",
    [
        ("localhost", "localhost"),
        ("LocalHost:5678", "localhost"),
        ("example.org.", "example.org"),
        ("192.168.1.20:80", "192.168.1.20"),
        ("[::1]:5678", "::1"),
        ("[FE80::1]", "fe80::1"),
        ("", None),
        ("evil.example:80:80", None),
        ("user@host", None),
        ("::1", None),  # an IPv6 address needs its brackets in Host
        ("host:123456", None),
    ],
)
def test_host_name_strips_port_case_and_final_dot(value, name):
    assert host_name(value) == name


@pytest.mark.parametrize(
    "host_header, status",
    [
        ("Host: localhost:5678\r\n", None),
        ("Host: 127.0.0.1\r\n", None),
        ("Host: [::1]:5678\r\n", None),
        ("Host: LOCALHOST.\r\n", None),
        ("Host: evil.example:5678\r\n", 403),  # DNS rebinding: another site's name for our address
        ("Host: localhost.evil.example\r\n", 403),
        ("", 400),
        ("Host: localhost\r\nHost: localhost\r\n", 400),
        ("Host: local host\r\n", 400),
    ],
)
def test_host_check(host_header, status):
    """serve(hosts=...): a request must name this server in its one Host header."""
    req = request(GOOD.replace("Host: server.example.com\r\n", host_header))
    hosts = frozenset({"localhost", "127.0.0.1", "::1"})
    if status is None:
        check_host(req.headers, hosts)
    else:
        with pytest.raises(InvalidHeader) as info:
            check_host(req.headers, hosts)
        assert info.value.status == status
        assert isinstance(info.value, InvalidHost) == (status == 403)


def test_host_check_function_gets_the_name_and_headers():
    seen = []
    check_host(request().headers, lambda name, headers: seen.append((name, headers["Origin"])) or True)
    assert seen == [("server.example.com", "http://example.com")]
    with pytest.raises(InvalidHost):
        check_host(request().headers, lambda name, headers: False)


def test_subprotocol_follows_the_server_preference():
    """§4.2.2: the server picks one of the client's subprotocols, or none."""
    headers = request().headers
    assert select_subprotocol(headers, ["superchat", "chat"]) == "superchat"
    assert select_subprotocol(headers, ["mqtt"]) is None
    assert select_subprotocol(headers, None) is None


def test_client_request_and_response_round_trip():
    """The client's request passes the server's checks; the answer passes the client's."""
    key = generate_key()
    req = parse_request(build_request("localhost:5678", "/x?y=1", key, origin="null", subprotocols=["chat"]))
    assert check_request(req) == key and req.path == "/x?y=1"
    answer = (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_key(key)}\r\nSec-WebSocket-Protocol: chat\r\n\r\n"
    )
    assert check_response(parse_response(answer.encode()), key, ["chat"]) == "chat"


@pytest.mark.parametrize(
    "answer, error",
    [
        ("HTTP/1.1 404 Not Found\r\n\r\n", InvalidStatus),
        ("HTTP/1.1 101 OK\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n", InvalidUpgrade),
        ("HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: wrong\r\n\r\n", InvalidHeader),
        (
            "HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n"
            "Sec-WebSocket-Protocol: other\r\n\r\n",
            NegotiationError,
        ),
    ],
)
def test_client_rejects_bad_answers(answer, error):
    """§4.1: the client fails the connection unless the answer is right."""
    key = generate_key()
    with pytest.raises(error):
        check_response(parse_response(answer.format(accept=accept_key(key)).encode()), key, ["chat"])


# ------------------------------------------------------- the server's decision

UPGRADE_101 = (("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", ACCEPT))
DEFLATE_OFFER = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"


def test_accept_request_answers_the_rfc_example():
    """§1.3 and §4.2.2: the sample request opens with Upgrade, Connection and the sample accept value, nothing agreed."""
    assert accept_request(request()) == Accept(UPGRADE_101, None, None)


def test_accept_request_agrees_on_the_server_preferred_subprotocol():
    """§4.2.2: the chosen subprotocol is answered in Sec-WebSocket-Protocol, after the accept value."""
    accept = accept_request(request(), subprotocols=["superchat", "chat"])
    assert accept == Accept((*UPGRADE_101, ("Sec-WebSocket-Protocol", "superchat")), "superchat", None)


def test_accept_request_without_a_shared_subprotocol_answers_none():
    """§4.2.2: no subprotocol in common is no header, not a refusal."""
    assert accept_request(request(), subprotocols=["mqtt"]) == Accept(UPGRADE_101, None, None)


@pytest.mark.parametrize("compression", ["deflate", None])
def test_accept_request_answers_a_deflate_offer_only_with_compression(compression):
    """RFC 7692 §5: with compression="deflate" the browser's offer is answered last; with None it is ignored."""
    accept = accept_request(request(GOOD.replace("Origin:", DEFLATE_OFFER + "Origin:")), compression=compression)
    if compression is None:
        assert accept == Accept(UPGRADE_101, None, None)
    else:
        assert accept.headers == (*UPGRADE_101, ("Sec-WebSocket-Extensions", "permessage-deflate"))
        assert accept.extension is not None and accept.subprotocol is None


REFUSALS = {
    "post": (GOOD.replace("GET /chat", "POST /chat"), {}, InvalidHandshake, 405, [("Allow", "GET")]),
    "no-upgrade": (
        GOOD.replace("Upgrade: websocket\r\n", ""), {}, InvalidUpgrade, 426,
        [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Version", "13")],
    ),
    "origin": (GOOD, {"origins": ["https://example.org"]}, InvalidOrigin, 403, []),
    # check_request comes first: a request that is no WebSocket at all hears 426, whatever its Origin.
    "no-upgrade-and-origin": (
        GOOD.replace("Upgrade: websocket\r\n", ""), {"origins": ["https://example.org"]}, InvalidUpgrade, 426,
        [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Version", "13")],
    ),
    # RFC 7692 §7 declines an offer with a bad parameter (below); only a header
    # that breaks RFC 6455 §9.1's grammar cannot be read as offers at all.
    "malformed-extensions-header": (
        GOOD.replace("Origin:", "Sec-WebSocket-Extensions: permessage-deflate; =1\r\nOrigin:"),
        {"compression": "deflate"}, NegotiationError, 400, [],
    ),
}


@pytest.mark.parametrize("head, settings, error, status, headers", REFUSALS.values(), ids=list(REFUSALS))
def test_accept_request_refuses_with_the_status_and_headers_to_answer(head, settings, error, status, headers):
    """§4.2.1, §4.4, §10.2, RFC 7692 §7.1: each refusal carries its status and the headers that go with it."""
    with pytest.raises(error) as info:
        accept_request(request(head), **settings)
    assert type(info.value) is error and info.value.status == status and info.value.headers == headers


def test_accept_request_declines_a_deflate_offer_with_an_unknown_parameter():
    """RFC 7692 §7: "A server MUST decline an extension negotiation offer" with an unknown
    parameter: the connection opens, uncompressed, with no Sec-WebSocket-Extensions."""
    head = GOOD.replace("Origin:", "Sec-WebSocket-Extensions: permessage-deflate; x=1\r\nOrigin:")
    assert accept_request(request(head), compression="deflate") == Accept(UPGRADE_101, None, None)


# ------------------------------------------------------- the client's check

ANSWER = (
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    f"Sec-WebSocket-Accept: {ACCEPT}\r\n"
)


def response(*extra: str, status: str = "101 Switching Protocols", body: bytes = b""):
    head = ANSWER.replace("101 Switching Protocols", status) + "".join(f"{line}\r\n" for line in extra) + "\r\n"
    answer = parse_response(head.encode())
    answer.body = body
    return answer


def test_accept_response_takes_the_rfc_example():
    """§1.3 and §4.1: the sample answer to the sample key opens the connection, nothing agreed."""
    assert accept_response(response(), KEY) == Agreement(None, None)


def test_accept_response_returns_the_subprotocol_and_the_extension():
    """§4.1: a subprotocol among those offered, and a deflate answer to a deflate offer, are agreed."""
    agreed = accept_response(
        response("Sec-WebSocket-Protocol: chat", "Sec-WebSocket-Extensions: permessage-deflate"),
        KEY,
        subprotocols=["chat", "superchat"],
        compression="deflate",
    )
    assert agreed.subprotocol == "chat" and agreed.extension is not None


OTHER_KEY = "x3JJHMbDL1EzLkh9GBhXDw=="  # any key but KEY: ACCEPT does not answer it


@pytest.mark.parametrize(
    "answer, key, settings, error, message",
    [
        (response(status="403 Forbidden", body=b"Forbidden: origin\n"), KEY, {}, InvalidStatus, "HTTP 403: Forbidden: origin"),
        (response(), OTHER_KEY, {}, InvalidHeader, "wrong Sec-WebSocket-Accept"),
        (response("Sec-WebSocket-Protocol: chat"), KEY, {}, NegotiationError, "subprotocol we did not offer"),
        (
            response("Sec-WebSocket-Extensions: permessage-deflate"), KEY, {"subprotocols": ["chat"]},
            NegotiationError, "extensions we did not offer",
        ),
        (
            response("Sec-WebSocket-Extensions: permessage-deflate; x=1"), KEY, {"compression": "deflate"},
            NegotiationError, "unknown parameter 'x'",
        ),
    ],
    ids=["not-101", "wrong-accept", "subprotocol-not-offered", "extension-not-offered", "bad-extension"],
)
def test_accept_response_fails_the_connection(answer, key, settings, error, message):
    """§4.1: the client fails the connection on a refusal, a wrong accept value or anything it did not offer."""
    with pytest.raises(error, match=message):
        accept_response(answer, key, **settings)
