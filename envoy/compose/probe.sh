#!/bin/bash
# Container health probe without curl (slim images have none): sends
# METHOD PATH to 127.0.0.1:PORT over bash's /dev/tcp; healthy on a 200.
#   tollgate-probe PORT PATH [METHOD]
set -u
exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
printf '%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' "${3:-GET}" "$2" >&3
IFS= read -r -t 5 status <&3 || exit 1
case "$status" in
    "HTTP/1."?" 200"*) exit 0 ;;
    *) exit 1 ;;
esac
