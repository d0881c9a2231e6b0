#!/usr/bin/env bash
# Vendor KaTeX (the math renderer of the docs site) into docs/assets/katex, so formulas render with no
# network: from `mkdocs serve`, from the built folder, offline. Needs npm (the npm registry) once;
# the files are committed, so CI and readers never fetch anything.
#
#   bash scripts/vendor_katex.sh [VERSION]        (default 0.16.47)
set -euo pipefail
VERSION="${1:-0.16.47}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$ROOT/docs/assets/katex"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
(cd "$WORK" && npm pack --silent "katex@$VERSION" >/dev/null && tar xzf "katex-$VERSION.tgz")
rm -rf "$OUT"
mkdir -p "$OUT/contrib" "$OUT/fonts"
cp "$WORK/package/dist/katex.min.js" "$WORK/package/dist/katex.min.css" "$OUT/"
cp "$WORK/package/dist/contrib/auto-render.min.js" "$OUT/contrib/"
cp "$WORK/package/dist/fonts/"*.woff2 "$OUT/fonts/"   # every current browser reads woff2; the css lists it first
cp "$WORK/package/LICENSE" "$OUT/LICENSE"
echo "KaTeX $VERSION -> $OUT ($(du -sh "$OUT" | cut -f1))"
