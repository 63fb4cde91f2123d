#!/usr/bin/env bash
# Builds the browser package into target/web/pkg (package.json, .wasm, JS glue, .d.ts) and the
# chat page the relay serves with `--web-dir target/web/site`. Prints the .wasm's size.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --locked -p sotto-web --target wasm32-unknown-unknown --profile wasm-release
out=target/web
rm -rf "$out/pkg" "$out/site"
mkdir -p "$out/pkg" "$out/site"
wasm-bindgen --target web --out-dir "$out/pkg" --out-name sotto_web \
    --remove-name-section --remove-producers-section \
    target/wasm32-unknown-unknown/wasm-release/sotto_web.wasm
cp ffi/web/package.json ffi/web/README.md "$out/pkg/"

cp ffi/web/www/* "$out/site/"
cp -r "$out/pkg" "$out/site/pkg"
# The relay serves these twins to browsers that accept gzip.
for f in "$out/site/pkg/sotto_web_bg.wasm" "$out/site/pkg/sotto_web.js" "$out/site/app.js"; do
    gzip -9 -k -f "$f"
done

raw=$(stat -c %s "$out/pkg/sotto_web_bg.wasm")
gz=$(gzip -9 -c "$out/pkg/sotto_web_bg.wasm" | wc -c)
echo "== sotto-web: $out/pkg/sotto_web_bg.wasm $raw bytes, $gz gzipped"
