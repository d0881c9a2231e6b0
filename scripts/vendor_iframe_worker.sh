#!/usr/bin/env bash
# Vendor iframe-worker's shim into docs/assets/iframe-worker, so the site search works from file://
# with no network. Browsers refuse to start a Web Worker from a file:// page; Material for MkDocs runs
# its search in a worker, and its `offline` plugin loads this shim (from unpkg.com unless the page
# already lists one in `extra.polyfills`, as mkdocs.yml does) to run the worker in a hidden iframe
# instead. Needs npm (the npm registry) once; the files are committed, so CI and readers fetch nothing.
#
#   bash scripts/vendor_iframe_worker.sh [VERSION]        (default 1.0.4)
set -euo pipefail
VERSION="${1:-1.0.4}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$ROOT/docs/assets/iframe-worker"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
(cd "$WORK" && npm pack --silent "iframe-worker@$VERSION" >/dev/null && tar xzf "iframe-worker-$VERSION.tgz")
rm -rf "$OUT"
mkdir -p "$OUT"
cp "$WORK/package/shim/index.js" "$OUT/shim.js"   # what https://unpkg.com/iframe-worker/shim serves
cp "$WORK/package/LICENSE" "$OUT/LICENSE"
echo "iframe-worker $VERSION -> $OUT ($(du -sh "$OUT" | cut -f1))"
