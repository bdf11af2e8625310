#!/usr/bin/env bash
# Build the Go example client with Debian's toolchain, offline, in GOPATH mode.
#
# Generates the stubs with the repository's buf.gen.yaml (one `buf generate` for Go,
# Java and Python, so every plugin it names must be installed) into
# examples/go/gopath/buf/gen/..., puts the Go ones under gopath/src/textlabeler/gen/go/...
# (the go_package paths in the protos), then builds examples/go/gopath/bin/labeler-client.
# Needs: golang-go protobuf-compiler protoc-gen-go protoc-gen-go-grpc
#        protobuf-compiler-grpc-java-plugin protobuf-compiler-grpc (buf.gen.yaml's plugins)
#        golang-google-grpc-dev golang-google-protobuf-dev golang-github-golang-protobuf-1-5-dev
#        and buf (`make tools`, or $BUF)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
gopath="$here/gopath"
buf="${BUF:-$(command -v buf || echo "$repo/.tools/node_modules/.bin/buf")}"

for tool in go protoc protoc-gen-go protoc-gen-go-grpc grpc_java_plugin grpc_python_plugin "$buf"; do
  command -v "$tool" >/dev/null || { echo "build.sh: '$tool' not found; see examples/go/README.md" >&2; exit 2; }
done

rm -rf "$gopath/src/textlabeler/gen" "$gopath/buf"
mkdir -p "$gopath/src/textlabeler" "$gopath/bin"
(cd "$repo" && "$buf" generate -o "$gopath/buf")
cp -r "$gopath/buf/gen/go/textlabeler/gen" "$gopath/src/textlabeler/gen"

# GOPATH mode: no module proxy; Debian's Go libraries live in /usr/share/gocode.
export GO111MODULE=off GOPATH="$gopath:/usr/share/gocode"
export GOCACHE="${GOCACHE:-$gopath/cache}"
cd "$here/client"
go vet .
go build -o "$gopath/bin/labeler-client" .
echo "built $gopath/bin/labeler-client"
