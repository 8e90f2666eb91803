#!/usr/bin/env bash
# Vendor-SDK compatibility check: installs lc-sdk-python 0.4.2 into a venv
# under target/ (once), builds the chatgate binary, and runs
# python_sdk_check.py against it.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="$root/target/sdk-venv"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import livechat.agent" 2>/dev/null; then
  python3 -m venv "$venv"
  # The 0.4.2 wheel imports loguru without declaring it.
  "$venv/bin/pip" install --quiet --disable-pip-version-check lc-sdk-python==0.4.2 loguru
fi
command -v openssl >/dev/null || { apt-get update -qq && apt-get install -y -qq openssl; }
cargo build --locked --quiet -p chatgate-server --bin chatgate
"$venv/bin/python" "$root/tests/sdk/python_sdk_check.py" "$root/target/debug/chatgate"
