#!/usr/bin/env bash
# Fails if the committed .wasm in policies/default are not exactly what
# scripts/build-plugins.sh builds from the current sources, or if bundle.toml pins other
# hashes. Skips (exit 0, with a message) when the wasm32 target cannot be installed.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
    if ! rustup target add wasm32-unknown-unknown >/dev/null 2>&1; then
        echo "check-plugins: SKIPPED: the wasm32-unknown-unknown target is not available (rustup target add failed)"
        exit 0
    fi
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
PLUGINS_TARGET_DIR="${PLUGINS_TARGET_DIR:-$tmp/target}" scripts/build-plugins.sh --out "$tmp/out" >/dev/null

status=0
for built in "$tmp"/out/*.wasm; do
    name="$(basename "$built")"
    committed="policies/default/$name"
    if [[ ! -f "$committed" ]]; then
        echo "check-plugins: $committed is missing"; status=1; continue
    fi
    if ! cmp -s "$built" "$committed"; then
        echo "check-plugins: $committed differs from a fresh build (run scripts/build-plugins.sh)"; status=1
    fi
    sha="$(sha256sum "$built" | cut -d' ' -f1)"
    if ! grep -q "^sha256 = \"$sha\"" policies/default/bundle.toml; then
        echo "check-plugins: policies/default/bundle.toml does not pin $name's sha256 $sha"; status=1
    fi
done
if [[ $status -eq 0 ]]; then
    echo "check-plugins: policies/default is up to date"
fi
exit $status
