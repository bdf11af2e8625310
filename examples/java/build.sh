#!/usr/bin/env bash
# Build the Java example client with Debian's toolchain, offline (no Maven repository).
#
# Generates the Java messages and gRPC stubs with the repository's buf.gen.yaml (one
# `buf generate` for Go, Java and Python, so every plugin it names must be installed)
# into examples/java/build/gen/java, compiles them with the client into build/classes,
# and writes build/labeler-client, a launcher script. Needs: default-jdk-headless
#   protobuf-compiler protobuf-compiler-grpc-java-plugin protoc-gen-go protoc-gen-go-grpc
#   protobuf-compiler-grpc (buf.gen.yaml's plugins) and buf (`make tools`, or $BUF),
#   libgrpc-java libprotobuf-java libnetty-java libperfmark-java
#   libgeronimo-annotation-1.3-spec-java libgoogle-gson-java (grpc-java parses the
#   retry policy's service config JSON with gson)
#   libnetty-tcnative-java libnetty-tcnative-jni (TLS: Debian's netty has no JDK ALPN)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
build="$here/build"
jars=/usr/share/java
buf="${BUF:-$(command -v buf || echo "$repo/.tools/node_modules/.bin/buf")}"

for tool in javac java protoc grpc_java_plugin protoc-gen-go protoc-gen-go-grpc grpc_python_plugin "$buf"; do
  command -v "$tool" >/dev/null || { echo "build.sh: '$tool' not found; see examples/java/README.md" >&2; exit 2; }
done

# What grpc-java needs at compile and run time, from Debian's jars. The generated
# stubs carry @javax.annotation.Generated (geronimo-annotation provides it).
classpath=""
for jar in grpc-api grpc-core grpc-context grpc-netty grpc-protobuf grpc-protobuf-lite grpc-stub \
           protobuf guava failureaccess perfmark-api geronimo-annotation-1.3-spec jsr305 gson \
           netty-buffer netty-codec netty-codec-http netty-codec-http2 netty-codec-socks netty-common \
           netty-handler netty-handler-proxy netty-resolver netty-transport netty-tcnative; do
  if [ -f "$jars/$jar.jar" ]; then
    classpath="$classpath:$jars/$jar.jar"
  elif [ "$jar" != failureaccess ]; then  # failureaccess is folded into Debian's guava
    echo "build.sh: $jars/$jar.jar is missing; see examples/java/README.md" >&2
    exit 2
  fi
done
classpath="${classpath#:}"
# TLS needs ALPN, which Debian's netty offers only through OpenSSL (netty-tcnative).
# Debian names the JNI library libnetty-tcnative.so; netty loads
# libnetty_tcnative.so and checks its own file name, so it gets a copy by that name.
tcnative="/usr/lib/$(uname -m)-linux-gnu/jni/libnetty-tcnative.so"
[ -f "$tcnative" ] || { echo "build.sh: $tcnative is missing; see examples/java/README.md" >&2; exit 2; }

rm -rf "$build"
mkdir -p "$build/gen" "$build/classes" "$build/native"
cp "$tcnative" "$build/native/libnetty_tcnative.so"
(cd "$repo" && "$buf" generate -o "$build")

javac -encoding UTF-8 -Xlint:none -nowarn -d "$build/classes" -cp "$classpath" \
  $(find "$build/gen/java" "$here/src" -name '*.java' | sort)

cat > "$build/labeler-client" <<LAUNCHER
#!/bin/sh
# Java decodes its arguments and encodes its output with the locale's charset:
# run under a UTF-8 locale so Chinese words survive.
LC_ALL=C.UTF-8 exec java -Djava.library.path="$build/native" -Dfile.encoding=UTF-8 -Dsun.stdout.encoding=UTF-8 -Dsun.stderr.encoding=UTF-8 \\
  -cp "$build/classes:$classpath" com.textlabeler.examples.LabelerClient "\$@"
LAUNCHER
chmod +x "$build/labeler-client"
echo "built $build/labeler-client"
