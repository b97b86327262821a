#!/usr/bin/env bash
# Installs what tests/instrumentation.rs needs, idempotently (each step is skipped when its result
# is already there), from Debian, Maven Central and npm:
#   - Debian's postgresql-15 (the MES service's database; the test runs its own server on a free
#     port, so the package's own cluster service is stopped and disabled), a JDK and Maven;
#   - the OpenTelemetry Java agent and the CRM service's libraries (amqp-client, H2, the
#     OpenTelemetry API) into ~/.cache/tracegate/instrumentation (TRACEGATE_CACHE moves it);
#   - the MES service's npm packages (tests/instrumentation/node/package-lock.json) into
#     tests/instrumentation/node/node_modules.
# The Shop service's Python packages are in tests/requirements.txt (scripts/test.sh installs them
# into .venv). RabbitMQ is installed by scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."

JAVA_AGENT_VERSION=2.33.1   # keep in step with tests/instrumentation/harness.rs
CACHE=${TRACEGATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tracegate}/instrumentation

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
# Maven's output only when it fails (-q still prints colour codes).
mvn_quiet() { local out; out=$(mvn -q -B "$@" 2>&1) || { echo "$out" >&2; return 1; }; }
apt_install() {
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if [ ! -x /usr/lib/postgresql/15/bin/pg_ctl ]; then
  echo "== installing postgresql-15 (needed by tests/instrumentation.rs)" >&2
  apt_install postgresql-15
  as_root systemctl disable --now postgresql >/dev/null 2>&1 || true
  as_root pg_ctlcluster 15 main stop >/dev/null 2>&1 || true   # without systemd
fi
if ! command -v javac >/dev/null 2>&1 || ! command -v mvn >/dev/null 2>&1; then
  echo "== installing openjdk-17-jdk-headless and maven" >&2
  apt_install openjdk-17-jdk-headless maven
fi
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 \
  || { echo "node and npm are needed by tests/instrumentation.rs (Node.js 20 or newer)" >&2; exit 1; }

mkdir -p "$CACHE"
agent="$CACHE/opentelemetry-javaagent-$JAVA_AGENT_VERSION.jar"
if [ ! -s "$agent" ]; then
  echo "== fetching the OpenTelemetry Java agent $JAVA_AGENT_VERSION" >&2
  mvn_quiet dependency:copy \
    -Dartifact="io.opentelemetry.javaagent:opentelemetry-javaagent:$JAVA_AGENT_VERSION" \
    -DoutputDirectory="$CACHE"
fi
# The CRM's libraries, refreshed when its pom.xml changes.
pom=tests/instrumentation/java/pom.xml
stamp="$CACHE/java-lib/.pom.sha256"
if [ ! -f "$stamp" ] || [ "$(sha256sum < "$pom")" != "$(cat "$stamp")" ]; then
  echo "== fetching the CRM service's Java libraries ($pom)" >&2
  rm -rf "$CACHE/java-lib"
  mvn_quiet -f "$pom" dependency:copy-dependencies -DoutputDirectory="$CACHE/java-lib"
  sha256sum < "$pom" > "$stamp"
fi

# The MES's npm packages, reinstalled when package-lock.json changes.
node_dir=tests/instrumentation/node
stamp="$node_dir/node_modules/.tracegate-lock.sha256"
if [ ! -f "$stamp" ] || [ "$(sha256sum < "$node_dir/package-lock.json")" != "$(cat "$stamp")" ]; then
  echo "== npm ci in $node_dir" >&2
  (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
  sha256sum < "$node_dir/package-lock.json" > "$stamp"
fi
