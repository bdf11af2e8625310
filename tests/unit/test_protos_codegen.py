"""protoc with Debian's Go and Java gRPC plugins generates code from protos/
that compiles (with the example clients that use it), with a client method for
every RPC of both services."""

from __future__ import annotations

import re

import pytest

from labeler.v1 import labeler_pb2
from tests.support.interop_support import REPO, build
from trainer.v1 import trainer_pb2

pytestmark = [pytest.mark.timeout(600), pytest.mark.interop]

SERVICES = [
    labeler_pb2.DESCRIPTOR.services_by_name["Labeler"],
    trainer_pb2.DESCRIPTOR.services_by_name["Trainer"],
]


def test_go_stubs_generate_and_compile():
    client = build("go")
    assert client.is_file()
    gen = REPO / "examples/go/gopath/src/textlabeler/gen/go"
    for service in SERVICES:
        package = service.file.package.split(".")[0]
        source = (gen / package / "v1" / f"{package}_grpc.pb.go").read_text()
        interface = re.search(rf"type {service.name}Client interface \{{(.*?)\n\}}", source, re.S).group(1)
        for method in service.methods:
            assert re.search(rf"\n\s+{method.name}\(ctx context\.Context", interface), (
                f"Go: {service.name}.{method.name}"
            )


def test_java_stubs_generate_and_compile():
    client = build("java")
    assert client.is_file()
    for service in SERVICES:
        package = service.file.GetOptions().java_package
        stub = REPO / "examples/java/build/classes" / package.replace(".", "/") / f"{service.name}Grpc.java"
        source = (
            REPO / "examples/java/build/gen/java" / package.replace(".", "/") / f"{service.name}Grpc.java"
        ).read_text()
        assert stub.with_suffix(".class").is_file(), f"{service.name}Grpc did not compile"
        for method in service.methods:
            java_name = method.name[0].lower() + method.name[1:]
            assert f"public void {java_name}(" in source, f"Java: {service.name}.{method.name}"
