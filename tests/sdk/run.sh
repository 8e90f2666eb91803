#!/usr/bin/env bash
# Vendor-SDK compatibility checks against the real binary:
#  - lc-sdk-python 0.4.2 (agent and customer, RTM and Web, over TLS), in a
#    venv under target/sdk-venv;
#  - @livechat/customer-sdk 4.0.2 (customer, RTM), from the pinned
#    tests/sdk/package-lock.json, under target/sdk-npm.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="$root/target/sdk-venv"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import livechat.agent" 2>/dev/null; then
  python3 -m venv "$venv"
  # The 0.4.2 wheel imports loguru without declaring it.
  "$venv/bin/pip" install --quiet --disable-pip-version-check lc-sdk-python==0.4.2 loguru
fi
npm_dir="$root/target/sdk-npm"
if [ ! -d "$npm_dir/node_modules/@livechat/customer-sdk" ]; then
  mkdir -p "$npm_dir"
  cp "$root/tests/sdk/package.json" "$root/tests/sdk/package-lock.json" "$npm_dir/"
  (cd "$npm_dir" && npm ci --silent --no-audit --no-fund)
fi
cargo build --locked --quiet -p chatgate-server --bin chatgate
status=0
"$venv/bin/python" "$root/tests/sdk/python_sdk_check.py" "$root/target/debug/chatgate" || status=1
NODE_PATH="$npm_dir/node_modules" node "$root/tests/sdk/customer_sdk_check.js" "$root/target/debug/chatgate" || status=1
exit $status
