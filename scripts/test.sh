#!/usr/bin/env bash
# Runs every test of tracegate on a fresh machine: installs what the tests need (Debian's
# libpython3.11 for the rotel wheel, Debian's prometheus-alertmanager, Python packages into ./.venv,
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

if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  python3 -m venv .venv
fi
echo "== installing Python test peers (tests/requirements.txt)"
.venv/bin/pip install -q --disable-pip-version-check -r tests/requirements.txt

export ROTEL_AGENT="$PWD/.venv/lib/python3.11/site-packages/rotel/rotel-agent"
test -x "$ROTEL_AGENT" || { echo "rotel-agent not found at $ROTEL_AGENT" >&2; exit 1; }

# Jaeger v2, the real downstream of tests/jaeger.rs and the README's Jaeger quick start: built
# from the Go module proxy into ~/.cache/tracegate once (minutes), reused by later runs and clones.
echo "== Jaeger (scripts/jaeger/install.sh)"
JAEGER_BIN=$(bash scripts/jaeger/install.sh)
export JAEGER_BIN

echo "== cargo test"
cargo test --locked --all-targets "$@"
