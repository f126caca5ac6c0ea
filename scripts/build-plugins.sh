#!/usr/bin/env bash
# Rebuilds the standard plugins for wasm32-unknown-unknown, byte for byte, into
# policies/default/, and writes their sha256 into policies/default/bundle.toml.
#
#   scripts/build-plugins.sh            # build and install into policies/default
#   scripts/build-plugins.sh --out DIR  # build into DIR only (used by check-plugins.sh)
#
# Reproducible: the toolchain is pinned by rust-toolchain.toml, the profile `plugin` in
# Cargo.toml fixes opt-level/LTO/codegen-units/panic/strip, and every absolute path
# (checkout, cargo home, sysroot, target dir) is remapped, so the bytes do not depend on
# where or by whom the build runs.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

out=""
if [[ "${1:-}" == "--out" ]]; then
    out="${2:?--out needs a directory}"
fi

plugins=(roles-standard notify-owner voucher-standard business-hours anti-passback two-person occupancy)

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
    rustup target add wasm32-unknown-unknown
fi

target_dir="${PLUGINS_TARGET_DIR:-${CARGO_TARGET_DIR:-$root/target}/wasm-plugins}"
cargo_home="${CARGO_HOME:-$HOME/.cargo}"
sysroot="$(rustc --print sysroot)"

export RUSTFLAGS="--remap-path-prefix=$root=/keyway --remap-path-prefix=$cargo_home=/cargo \
--remap-path-prefix=$sysroot=/rustc --remap-path-prefix=$target_dir=/target -C strip=symbols"
export CARGO_TARGET_DIR="$target_dir"
# Nothing from the environment may leak into the build.
unset CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_RUSTFLAGS SOURCE_DATE_EPOCH || true

args=()
for p in "${plugins[@]}"; do args+=(-p "keyway-plugin-$p"); done
cargo build --locked --target wasm32-unknown-unknown --profile plugin "${args[@]}"

dest="${out:-$root/policies/default}"
mkdir -p "$dest"
for p in "${plugins[@]}"; do
    install -m 644 "$target_dir/wasm32-unknown-unknown/plugin/keyway_plugin_${p//-/_}.wasm" "$dest/$p.wasm"
done

if [[ -z "$out" ]]; then
    manifest="$dest/bundle.toml"
    tmp="$(mktemp)"
    # Rewrite the `sha256 = "..."` line that follows each `file = "x.wasm"` line.
    awk -v dir="$dest" '
        /^file *= *"/ { match($0, /"[^"]*"/); file = substr($0, RSTART + 1, RLENGTH - 2) }
        /^sha256 *= *"/ && file != "" {
            cmd = "sha256sum \"" dir "/" file "\""; cmd | getline line; close(cmd)
            split(line, parts, " "); print "sha256 = \"" parts[1] "\""; file = ""; next
        }
        { print }
    ' "$manifest" > "$tmp"
    cat "$tmp" > "$manifest"
    rm -f "$tmp"
    echo "built ${#plugins[@]} plugins into $dest and updated $manifest"
    (cd "$dest" && sha256sum ./*.wasm)
fi
