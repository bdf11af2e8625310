"""The one status table: every domain error, gRPC's codes, TF Serving's numbers."""

from __future__ import annotations

import grpc
import pytest

from rpc import errors
from rpc.addresses import host_port, is_loopback
from rpc.server import status_code

ERROR_CLASSES = [
    cls for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, errors.ServiceError)
]


def test_the_table_is_grpcs():
    assert {code.name: code.value[0] for code in grpc.StatusCode} == errors.STATUS_NUMBERS


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_each_error_maps_to_its_code(cls):
    assert status_code(cls("x")) == grpc.StatusCode[cls.code]
    assert type(errors.error(cls.code, "x")) is (errors.Internal if cls is errors.ServiceError else cls)
    assert type(errors.error(errors.STATUS_NUMBERS[cls.code], "x")).code == cls.code


def test_every_error_status_has_a_class():
    assert {cls.code for cls in ERROR_CLASSES} == set(errors.STATUS_NUMBERS) - {"OK"}


def test_unknown_names_and_numbers_are_unknown():
    assert type(errors.error("NO_SUCH_CODE", "x")) is errors.Unknown
    assert type(errors.error(99, "x")) is errors.Unknown
    assert errors.status_number("NO_SUCH_CODE") == 2


def test_an_error_class_must_name_a_real_status():
    with pytest.raises(TypeError, match="must name an error status"):
        type("Bad", (errors.ServiceError,), {"code": "NOT_A_CODE"})


def test_shown_cuts_long_text_once_and_keeps_short_text():
    assert errors.shown("movie") == "'movie'"
    assert errors.shown("movie\x00") == "'movie\\x00'"
    assert errors.shown("movie", quoted=False) == "movie"
    long = "m" * 10_240
    assert errors.shown(long, quoted=False) == "m" * errors.SHOWN_CHARS + "...(10240 characters)"
    assert errors.shown(long) == repr("m" * errors.SHOWN_CHARS) + "...(10240 characters)"


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.0.0.1", "127.0.0.1:50051"),
        ("localhost", "localhost:50051"),
        ("::1", "[::1]:50051"),
        ("[::1]", "[::1]:50051"),
        ("::", "[::]:50051"),
    ],
)
def test_host_port_brackets_ipv6(host, address):
    assert host_port(host, 50051) == address


def test_loopback():
    assert (
        is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("[::1]") and is_loopback("localhost")
    )
    assert (
        not is_loopback("0.0.0.0")
        and not is_loopback("::")
        and not is_loopback("")
        and not is_loopback("example.com")
    )
