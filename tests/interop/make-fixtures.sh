#!/usr/bin/env bash
# Regenerate fixtures/ with the real, pinned Capgo CLI (install it here first, see README.md). Offline-safe:
# it calls the locally installed binary. Writes: a test key pair, capacitor.config.json with its
# publicKey, the zip of fixtures/www, its V3-encrypted copy and a legacy (V2 checksum) copy,
# each with the CLI's JSON output.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
capgo="$here/node_modules/.bin/capgo"
out="$here/fixtures"
app="$(mktemp -d)"
legacy="$(mktemp -d)"
trap 'rm -rf "$app" "$legacy"' EXIT
export CI=true

# An app folder as the CLI expects it: package.json with the updater installed, webDir "www".
cp "$here/package.json" "$app/"
ln -s "$here/node_modules" "$app/node_modules"
cp -r "$out/www" "$app/www"
printf '{"appId": "com.otasim.interop", "appName": "otasim interop", "webDir": "www"}\n' \
  > "$app/capacitor.config.json"
cd "$app"
"$capgo" key create < /dev/null > /dev/null 2>&1
"$capgo" bundle zip com.otasim.interop --name bundle --json < /dev/null 2> /dev/null > zip.json
mv bundle bundle.zip
checksum="$(node -p 'require("./zip.json").checksum')"
"$capgo" bundle encrypt bundle.zip "$checksum" --json < /dev/null 2> /dev/null > encrypt.json

# Legacy checksum format: the CLI picks it when it finds no updater >= 5.30/6.30/7.30, so this
# runs in a folder (outside the app: module lookup walks up) whose package.json has none.
printf '{"name": "legacy", "private": true}\n' > "$legacy/package.json"
cp bundle.zip .capgo_key_v2 capacitor.config.json "$legacy/"
(cd "$legacy" && "$capgo" bundle encrypt bundle.zip "$checksum" --json < /dev/null 2> /dev/null \
  > "$app/legacy.json" && mv bundle.zip_encrypted.zip "$app/legacy_encrypted.zip")

cp .capgo_key_v2 "$out/capgo_key_v2"
cp .capgo_key_v2.pub "$out/capgo_key_v2.pub"
cp capacitor.config.json zip.json bundle.zip encrypt.json bundle.zip_encrypted.zip \
  legacy.json legacy_encrypted.zip "$out/"
"$capgo" --version 2> /dev/null > "$out/capgo-cli-version.txt"
