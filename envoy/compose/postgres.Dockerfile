# The fleet's PostgreSQL (fleet.yaml): Debian's `postgresql` package, run as
# the same uid as the sidecars (65532) so the password it makes on its first
# start can be read by them from the volume they share. Build context: this
# directory. The default base is what a user pulls; `./build.sh compose
# fleet up` passes the local Debian base (stack.py) instead.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
# No `main` cluster from the package's postinst: the entrypoint makes its own
# in the volume. One RUN: each step costs a container with the classic builder.
RUN set -eu; mkdir -p /etc/postgresql-common \
    && echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.conf \
    && apt-get update && apt-get install -y --no-install-recommends postgresql \
    && rm -rf /var/lib/apt/lists/* /usr/share/doc /usr/share/man \
    && ln -s /usr/lib/postgresql/*/bin /usr/local/lib/postgresql-bin \
    && useradd --uid 65532 --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin tollgate \
    && mkdir -p /var/lib/tollgate-pg /run/tollgate-fleet \
    && chown 65532:65532 /var/lib/tollgate-pg /run/tollgate-fleet && chmod 700 /var/lib/tollgate-pg /run/tollgate-fleet
COPY bin/tollgate-postgres-entrypoint /usr/local/bin/
ENV PATH=/usr/local/lib/postgresql-bin:$PATH
USER 65532:65532
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/local/bin/tollgate-postgres-entrypoint"]
