#!/usr/bin/env bash
# Builds Jaeger v2 into ~/.cache/tracegate/bin/jaeger once and prints its path; later runs (from
# any clone of the repository on this machine) only print it. Needs Go 1.24 or newer.
#
#   bash scripts/jaeger/install.sh        # 10 to 15 minutes on 2 cores the first time
#
# Jaeger v2 is released as Go module version v1.76.0 (= Jaeger v2.13.0). `go install
# github.com/jaegertracing/jaeger/cmd/jaeger@v1.76.0` refuses it (Jaeger's go.mod has a replace
# directive), so the module is downloaded and built as the main module, which honours it. A
# binary built this way has no UI assets (Jaeger UI is a separate JavaScript build that release
# archives embed): its query API works, its UI page is a placeholder.
#
# Everything Go downloads or builds stays under ~/.cache/tracegate (TRACEGATE_CACHE moves it).
# With JAEGER_BIN set to an executable, that one is used and nothing is built.
set -euo pipefail

VERSION=v1.76.0
CACHE=${TRACEGATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tracegate}
BIN=$CACHE/bin/jaeger

if [ -n "${JAEGER_BIN:-}" ] && [ -x "$JAEGER_BIN" ]; then
  echo "$JAEGER_BIN"
  exit 0
fi
if [ -x "$BIN" ] && [ "$(cat "$BIN.version" 2>/dev/null)" = "$VERSION" ]; then
  echo "$BIN"
  exit 0
fi
command -v go > /dev/null || { echo "Go is needed to build Jaeger: https://go.dev/doc/install" >&2; exit 1; }

mkdir -p "$CACHE/bin"
cd "$CACHE"
# -modcacherw: the module cache stays deletable with a plain rm -rf.
export GOPATH=$CACHE/go GOCACHE=$CACHE/go/build GOFLAGS="-modcacherw -buildvcs=false"
echo "== building Jaeger $VERSION into $BIN (once; 10 to 15 minutes on 2 cores)" >&2
start=$(date +%s)
go mod download "github.com/jaegertracing/jaeger@$VERSION"
(cd "$(go env GOMODCACHE)/github.com/jaegertracing/jaeger@$VERSION" && go build -o "$BIN.tmp" ./cmd/jaeger)
mv "$BIN.tmp" "$BIN"
echo "$VERSION" > "$BIN.version"
go clean -cache   # about 2 GB of compiled packages, of no use once the binary is built
echo "== Jaeger built in $(( $(date +%s) - start )) s" >&2
echo "$BIN"
