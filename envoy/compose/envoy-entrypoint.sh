#!/bin/sh
# Envoy's config is committed with a placeholder for the data token: the
# region's sidecar made the token on its first start (in the volume both
# mount), and Envoy must send it on every sync call.
set -eu
token_file=/run/tollgate-data/data-token
token=$(cat "$token_file")
case "$token" in
    *[!0-9a-f]* | "") echo "tollgate: $token_file must hold a hex token" >&2; exit 1 ;;
esac
umask 077
sed "s/@TOLLGATE_DATA_TOKEN@/$token/" /etc/tollgate/envoy.json > /tmp/envoy.json
exec envoy -c /tmp/envoy.json "$@"
