#!/usr/bin/env bash
# Runs every test of tracegate on a fresh machine: installs what the tests need (Debian's
# libpython3.11 for the rotel wheel, Debian's prometheus, prometheus-alertmanager and rabbitmq-server, Python packages into ./.venv,
# Jaeger built into ~/.cache/tracegate), then cargo's tests.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# rotel-agent (the third-party collector the tests export to) links against libpython3.11.
if ! ldconfig -p 2>/dev/null | grep -q 'libpython3.11.so.1.0'; then
  echo "== installing libpython3.11 (needed by rotel)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libpython3.11 >/dev/null
fi

# Alertmanager: the real receiver of tests/notifiers.rs, which starts its own instances on free
# ports; the package's own service (port 9093) is not needed, so it is stopped and disabled.
if ! command -v prometheus-alertmanager >/dev/null 2>&1; then
  echo "== installing prometheus-alertmanager (needed by tests/notifiers.rs)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus-alertmanager >/dev/null
  as_root systemctl disable --now prometheus-alertmanager >/dev/null 2>&1 || true
fi

# Prometheus (with promtool): tests/prometheus.rs starts its own on a free port with the shipped
# scrape configuration and rules; the package's own service (port 9090) is not needed.
if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
  echo "== installing prometheus (needed by tests/prometheus.rs)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  as_root systemctl disable --now prometheus >/dev/null 2>&1 || true
fi

# RabbitMQ: the real bus of the rabbitmq receiver's and the instrumentation tests, which start
# private nodes of their own (tests/common/rabbitmq.rs); the package's own node is not needed.
if [ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
  echo "== installing rabbitmq-server (needed by tests/common/rabbitmq.rs)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
  as_root systemctl disable --now rabbitmq-server >/dev/null 2>&1 || true
  as_root pkill -u rabbitmq beam.smp >/dev/null 2>&1 || true
fi

if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  python3 -m venv .venv
fi
echo "== installing Python test peers (tests/requirements.txt)"
.venv/bin/pip install -q --disable-pip-version-check -r tests/requirements.txt

export ROTEL_AGENT="$PWD/.venv/lib/python3.11/site-packages/rotel/rotel-agent"
test -x "$ROTEL_AGENT" || { echo "rotel-agent not found at $ROTEL_AGENT" >&2; exit 1; }

# The real OpenTelemetry agents of tests/instrumentation.rs: Debian's postgresql-15, the Java
# agent and the CRM's jars (Maven Central, into ~/.cache/tracegate), the MES's npm packages.
echo "== instrumented services (scripts/instrumentation/install.sh)"
bash scripts/instrumentation/install.sh

# The browser tests (tests/signin.rs, tests/console_browser.rs): Debian's chromium, driven by npm's
# playwright-core, a real OpenID Connect provider (npm's oidc-provider) and npm's axe-core, all
# from tests/browser/package-lock.json.
# Playwright never downloads a browser of its own.
if [ ! -x /usr/bin/chromium ]; then
  echo "== installing chromium (needed by the browser tests)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
# node_modules/.installed-lock is the lock file it was installed from: a changed lock reinstalls.
if ! cmp -s tests/browser/package-lock.json tests/browser/node_modules/.installed-lock 2>/dev/null; then
  echo "== installing the browser tests' npm packages (tests/browser)"
  (cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error \
    && cp package-lock.json node_modules/.installed-lock)
fi

# Jaeger v2, the real downstream of tests/jaeger.rs and the README's Jaeger quick start: built
# from the Go module proxy into ~/.cache/tracegate once (minutes), reused by later runs and clones.
echo "== Jaeger (scripts/jaeger/install.sh)"
JAEGER_BIN=$(bash scripts/jaeger/install.sh)
export JAEGER_BIN

echo "== cargo test"
# A fresh clone gains nothing from incremental compilation, and its caches cost gigabytes of disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
cargo test --locked --all-targets "$@"
