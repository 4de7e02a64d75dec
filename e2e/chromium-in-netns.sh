#!/bin/sh
# Runs Chromium inside network namespace $E2E_NETNS (as root). Playwright starts this in
# place of the browser (lib.mjs: newBrowser with `netns`); `ip netns exec` execs Chromium,
# keeping the pipes Playwright talks to it through.
set -eu
: "${E2E_NETNS:?E2E_NETNS names the network namespace}"
exec ip netns exec "$E2E_NETNS" "${CHROMIUM:-/usr/bin/chromium}" "$@"
