#!/bin/sh
# First start of a region: make its admin token (kept with the store) and its
# data token (shared with the region's Envoy); later starts reuse them.
set -eu
umask 077
[ -s /var/lib/tollgate/admin-token ] || tollgate-sidecar token generate > /var/lib/tollgate/admin-token
[ -s /run/tollgate-data/data-token ] || tollgate-sidecar token generate > /run/tollgate-data/data-token
exec tollgate-sidecar serve --admin-token-file /var/lib/tollgate/admin-token \
    --data-token-file /run/tollgate-data/data-token "$@"
