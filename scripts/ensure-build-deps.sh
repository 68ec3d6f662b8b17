#!/usr/bin/env bash
# Makes sure what building gim-export needs beyond cargo is on this machine: OpenSSL's headers and
# pkg-config (the openssl crate links the system libssl for CMS encryption and signing), and the
# openssl command the tests check folders with. Installs what is missing; fails loudly when it cannot.
set -euo pipefail

say() { echo "ensure-build-deps: $*" >&2; }
missing=()
command -v pkg-config >/dev/null || missing+=(pkg-config)
if ! pkg-config --exists openssl 2>/dev/null; then missing+=(libssl-dev); fi
command -v openssl >/dev/null || missing+=(openssl)
if [ ${#missing[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null; then
    say "missing ${missing[*]} and no apt-get to install them; install OpenSSL's development files and pkg-config"
    exit 1
  fi
  say "installing ${missing[*]}"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
