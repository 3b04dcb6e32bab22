"""Renders Envoy bootstrap configs (JSON) for Tollgate: the demo run, the
end-to-end tests and the bench all build their Envoy from these functions, so
what is tested is what is run.

Usage as a script: python3 envoy/render.py OUT.json --port P --admin-port A
  --upstream-port U --wasm PATH --plugin-config FILE [--no-hold] [--sidecar-port S]
or: python3 envoy/render.py compose [--check]   (writes or checks envoy/compose/envoy-<region>.json)
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import pathlib
import sys

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = {"name": "envoy.filters.http.router",
          "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
SINK_LISTENER = "tollgate_token_sink"
# The labels Tollgate's metrics carry, encoded in the stat name as
# `<tag>=.=<value>;.;<name>` (src/metrics.rs). Envoy makes tags of them only
# with these bootstrap `stats_tags` (the same regex Istio derives from
# ProxyConfig `extraStatTags`); /stats/prometheus then prints
# tollgate_token_refused_total{error="invalid_client"}.
METRIC_TAGS = ("error", "cause")


def stats_config() -> dict:
    return {"stats_tags": [{"tag_name": t, "regex": rf"({t}=\.=(.*?);\.;)"} for t in METRIC_TAGS]}


# Headers with underscores are dropped before any filter sees them: an
# upstream behind CGI, WSGI or PHP reads `x_tollgate_client_id` and
# `x-tollgate-client-id` as the same HTTP_X_TOLLGATE_CLIENT_ID, so a
# look-alike would be an identity forgery. DROP_HEADER rather than
# REJECT_REQUEST: the protection is the same (the header never arrives), and a
# client that sends some harmless `api_key` keeps working, as behind nginx's
# default. Envoy counts drops in `http1.dropped_headers_with_underscores` and
# `http2.dropped_headers_with_underscores`. The filter strips look-alikes of
# its identity headers itself as well (Istio's default is ALLOW).
UNDERSCORES = "DROP_HEADER"


def wasm_filter(wasm_path: str, plugin_config: dict, *, hold: bool = True, vm_id: str = "tollgate") -> dict:
    """The Tollgate HTTP filter. `hold` pairs the plugin's
    hold_token_request_headers with Envoy's allow_on_headers_stop_iteration
    (Envoy >= 1.35); without it the plugin buffers the body and lets the
    headers through to the token sink route."""
    plugin_config = dict(plugin_config, hold_token_request_headers=hold)
    config = {
        "name": "tollgate",
        "root_id": "tollgate",
        "vm_config": {
            "vm_id": vm_id,
            "runtime": "envoy.wasm.runtime.v8",
            "code": {"local": {"filename": str(wasm_path)}},
        },
        "configuration": {
            "@type": "type.googleapis.com/google.protobuf.StringValue",
            "value": json.dumps(plugin_config),
        },
        "failure_policy": "FAIL_CLOSED",
    }
    if hold:
        config["allow_on_headers_stop_iteration"] = True
    return {"name": "envoy.filters.http.wasm",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                             "config": config}}


def hcm(stat_prefix: str, routes: list, filters: list, *, underscores: str = UNDERSCORES,
        http1_trailers: bool = False, virtual_hosts: list | None = None) -> dict:
    """`underscores` and `http1_trailers` differ from the defaults only in
    tests that prove the filter does not depend on them; `virtual_hosts`
    replaces the single catch-all host serving `routes`."""
    config = {"name": "envoy.filters.network.http_connection_manager",
              "typed_config": {
                  "@type": HCM,
                  "stat_prefix": stat_prefix,
                  "common_http_protocol_options": {"headers_with_underscores_action": underscores},
                  # The guard matches path prefixes: hand it normalised paths,
                  # and refuse encoded slashes outright.
                  "normalize_path": True,
                  "merge_slashes": True,
                  "path_with_escaped_slashes_action": "REJECT_REQUEST",
                  "route_config": {"virtual_hosts": virtual_hosts or [
                      {"name": "all", "domains": ["*"], "routes": routes}]},
                  "http_filters": filters + [ROUTER],
              }}
    if http1_trailers:
        config["typed_config"]["http_protocol_options"] = {"enable_trailers": True}
    if virtual_hosts is not None:
        # Host names are matched without the port, whatever port the
        # client reached the listener on (a published container port).
        config["typed_config"]["strip_any_host_port"] = True
    return config


def listener(name: str, port: int, routes: list, filters: list, *, address: str = "127.0.0.1",
             **hcm_options) -> dict:
    return {"name": name,
            "address": {"socket_address": {"address": address, "port_value": port}},
            "filter_chains": [{"filters": [hcm(name, routes, filters, **hcm_options)]}]}


def cluster(name: str, port: int, *, timeout: str = "5s", address: str = "127.0.0.1") -> dict:
    """A one-endpoint cluster; a host name (a compose service) is resolved by DNS."""
    try:
        ipaddress.ip_address(address)
        discovery = {"type": "STATIC"}
    except ValueError:
        discovery = {"type": "STRICT_DNS", "dns_lookup_family": "V4_ONLY"}
    return {"name": name, **discovery, "connect_timeout": "1s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": address, "port_value": port}}}}]}]}}


def token_sink() -> tuple[dict, dict]:
    """An internal listener that waits for the whole request (buffer filter),
    then answers 404. Token requests are routed here so that, on hosts that
    cannot hold headers, their headers still never reach a real upstream;
    the filter answers before the body completes, so the sink never does."""
    lst = {
        "name": SINK_LISTENER,
        "internal_listener": {},
        "filter_chains": [{"filters": [hcm(SINK_LISTENER, [
            {"match": {"prefix": "/"},
             "direct_response": {"status": 404, "body": {"inline_string": "{\"error\":\"not_found\"}"}}}],
            [{"name": "envoy.filters.http.buffer",
              "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
                               "max_request_bytes": 1048576}}])]}],
    }
    cl = {"name": SINK_LISTENER, "connect_timeout": "1s",
          "load_assignment": {"cluster_name": SINK_LISTENER, "endpoints": [{"lb_endpoints": [
              {"endpoint": {"address": {"envoy_internal_address": {"server_listener_name": SINK_LISTENER}}}}]}]}}
    return lst, cl


def bootstrap(admin_port: int, listeners: list, clusters: list, *, admin_address: str = "127.0.0.1") -> dict:
    return {
        "admin": {"address": {"socket_address": {"address": admin_address, "port_value": admin_port}}},
        "bootstrap_extensions": [{"name": "envoy.bootstrap.internal_listener", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.bootstrap.internal_listener.v3.InternalListener"}}],
        "static_resources": {"listeners": listeners, "clusters": clusters},
        "stats_config": stats_config(),
    }


def identity_route_headers(plugin_config: dict) -> dict:
    """For `identity_headers.set_by: "route"`: the route fields that set the
    identity headers from the filter state Tollgate publishes and drop
    Authorization (unless keep_authorization); empty in the default mode,
    where the filter changes the headers itself."""
    identity = plugin_config.get("identity_headers") or {}
    if identity.get("set_by") != "route":
        return {}
    names = {"client_id": identity.get("client_id", "x-tollgate-client-id"),
             "profile_id": identity.get("profile_id", "x-tollgate-profile-id")}
    fields = {"request_headers_to_add": [
        # Overwrite: only the filter's value may reach the upstream. Without
        # filter state (public paths) the value is empty and no header is added.
        {"header": {"key": name, "value": f"%FILTER_STATE(wasm.tollgate.{field}:PLAIN)%"},
         "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
        for field, name in names.items()]}
    if not plugin_config.get("keep_authorization"):
        fields["request_headers_to_remove"] = ["authorization"]
    return fields


def gateway_routes(token_path: str = "/oauth2/token", plugin_config: dict | None = None) -> list:
    return [
        {"match": {"path": token_path}, "route": {"cluster": SINK_LISTENER, "timeout": "30s"}},
        {"match": {"prefix": "/"}, "route": {"cluster": "upstream"}, **identity_route_headers(plugin_config or {})},
    ]


def gateway(*, port: int, admin_port: int, upstream_port: int, wasm_path: str, plugin_config: dict,
            hold: bool = True, sidecar_port: int | None = None, token_path: str = "/oauth2/token",
            **hcm_options) -> dict:
    """The product: one listener with Tollgate in front of the upstream."""
    sink_listener, sink_cluster = token_sink()
    clusters = [cluster("upstream", upstream_port), sink_cluster]
    if sidecar_port is not None:
        clusters.append(cluster("tollgate_sidecar", sidecar_port))
    main = listener("tollgate", port, gateway_routes(token_path, plugin_config),
                    [wasm_filter(wasm_path, plugin_config, hold=hold)], **hcm_options)
    return bootstrap(admin_port, [main, sink_listener], clusters)


# --- the docker-compose harness (envoy/compose) -----------------------------

# Each region's public host names: its regional host first, then the custom
# domains it serves. A host not listed here gets a plain 404 from Envoy and
# never reaches the filter, so no token is minted for a name we do not serve.
# The filter's RFC 8414 discovery (issue 7, section 3) takes its issuer list
# from these same names.
COMPOSE_REGIONS = {
    "us": ["us.api.tollgate.test", "api.example.test"],
    "eu": ["eu.api.tollgate.test"],
}
# Names a user on the host reaches a region by through its published
# 127.0.0.1 port, without /etc/hosts entries (Postman, a browser, curl).
COMPOSE_LOOPBACK_NAMES = ["127.0.0.1", "localhost"]
COMPOSE_LISTEN_PORT, COMPOSE_ADMIN_PORT = 10000, 9901
COMPOSE_UPSTREAM_PORT, COMPOSE_SIDECAR_PORT = 8000, 8081
COMPOSE_WASM = "/usr/local/lib/tollgate/tollgate.wasm"
# The entrypoint of the Envoy image replaces this with the region's data
# token (shared by its sidecar through a volume), so no secret is committed.
DATA_TOKEN_PLACEHOLDER = "@TOLLGATE_DATA_TOKEN@"
WASM_FILTER = "envoy.filters.http.wasm"


def compose_region(region: str, *, hosts: list[str] | None = None, wasm_path: str = COMPOSE_WASM,
                   data_token: str = DATA_TOKEN_PLACEHOLDER) -> dict:
    """One region's Envoy inside the compose network: listens on all of the
    container's interfaces (compose publishes the port on 127.0.0.1 only),
    reaches its own sidecar and upstream by service name."""
    hosts = COMPOSE_REGIONS[region] if hosts is None else hosts
    plugin_config = {
        "sidecar": {"cluster": "tollgate_sidecar", "data_token": data_token, "authority": f"{region}-sidecar"},
        "public_paths": ["/demo/public/"],
        "realm": f"tollgate-{region}",
        # RFC 8414 discovery: the region's public names as a TLS front would
        # present them (the listener strips the port before the filter sees
        # the authority); any other host gets the filter's JSON 404.
        "issuers": [f"https://{h}" for h in hosts],
    }
    unknown_host = {
        "name": "unknown_host",
        "domains": ["*"],
        "routes": [{"match": {"prefix": "/"}, "direct_response": {
            "status": 404, "body": {"inline_string": "{\"error\":\"unknown_host\"}"}},
            "response_headers_to_add": [{"header": {"key": "content-type", "value": "application/json"},
                                         "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]}],
        # Route-level disable (Envoy >= 1.27): the filter never sees a
        # request for a host this region does not serve.
        "typed_per_filter_config": {WASM_FILTER: {
            "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": True}},
    }
    served = {"name": f"tollgate_{region}", "domains": hosts + COMPOSE_LOOPBACK_NAMES, "routes": gateway_routes()}
    sink_listener, sink_cluster = token_sink()
    main = listener("tollgate", COMPOSE_LISTEN_PORT, [], [wasm_filter(wasm_path, plugin_config)],
                    address="0.0.0.0", virtual_hosts=[served, unknown_host])
    clusters = [cluster("upstream", COMPOSE_UPSTREAM_PORT, address=f"{region}-upstream"), sink_cluster,
                cluster("tollgate_sidecar", COMPOSE_SIDECAR_PORT, address=f"{region}-sidecar")]
    return bootstrap(COMPOSE_ADMIN_PORT, [main, sink_listener], clusters, admin_address="0.0.0.0")


# The fleet (envoy/compose/fleet.yaml): every Envoy reaches its own sidecar
# as `sidecar` and the upstream as `upstream` on its cell's network, so the
# three share one config. A sidecar cut off from PostgreSQL keeps answering
# its Envoy from the last snapshot it has; past FLEET_MAX_STALENESS seconds
# without a sync the Envoy refuses (503) rather than trust a stale view.
FLEET_LONG_POLL_SECONDS, FLEET_MAX_STALENESS_SECONDS = 5, 10


def compose_fleet(*, wasm_path: str = COMPOSE_WASM, data_token: str = DATA_TOKEN_PLACEHOLDER) -> dict:
    plugin_config = {
        "sidecar": {"cluster": "tollgate_sidecar", "data_token": data_token, "authority": "sidecar",
                    "long_poll_seconds": FLEET_LONG_POLL_SECONDS,
                    "max_staleness_seconds": FLEET_MAX_STALENESS_SECONDS},
        "public_paths": ["/demo/public/"],
        "realm": "tollgate-fleet",
    }
    sink_listener, sink_cluster = token_sink()
    main = listener("tollgate", COMPOSE_LISTEN_PORT, gateway_routes(), [wasm_filter(wasm_path, plugin_config)],
                    address="0.0.0.0")
    clusters = [cluster("upstream", COMPOSE_UPSTREAM_PORT, address="upstream"), sink_cluster,
                cluster("tollgate_sidecar", COMPOSE_SIDECAR_PORT, address="sidecar")]
    return bootstrap(COMPOSE_ADMIN_PORT, [main, sink_listener], clusters, admin_address="0.0.0.0")


COMPOSE_DIR = pathlib.Path(__file__).resolve().parent / "compose"


def compose_files() -> dict[pathlib.Path, str]:
    files = {COMPOSE_DIR / f"envoy-{region}.json": json.dumps(compose_region(region), indent=1) + "\n"
             for region in COMPOSE_REGIONS}
    files[COMPOSE_DIR / "envoy-fleet.json"] = json.dumps(compose_fleet(), indent=1) + "\n"
    return files


def compose_main(argv: list[str]) -> None:
    """The compose harness mounts committed configs (a user's `docker compose
    up` runs no Python); --check fails when they drifted from this file."""
    ap = argparse.ArgumentParser(prog="render.py compose")
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args(argv)
    stale = []
    for path, text in compose_files().items():
        if a.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.write_text(text)
    if stale:
        raise SystemExit(f"stale: {', '.join(stale)}; run python3 envoy/render.py compose")


# --- The Istio shape -----------------------------------------------------
# What istiod and its agent hand Envoy for a WasmPlugin (Istio 1.30: the
# WasmPlugin is translated into a TrafficExtension named
# `<name>~istio-translated-wasmplugin`, pilot/pkg/config/kube/extensions/
# translate.go; the filter is an ECDS reference, pilot/pkg/networking/core/
# extension/extensionfilter.go; its PluginConfig is built by
# pilot/pkg/model/extensions.go, and the agent swaps the remote code for the
# downloaded file, pkg/wasm/convert.go). Mirrored here so the e2e suite runs
# the filter exactly as Istio would load it.

WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
RBAC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
TOKEN_SINK_ROUTE = "tollgate-token-sink"


def istio_cluster(service: str, namespace: str, port: int) -> str:
    """Istio's name for the outbound cluster of a Kubernetes Service port."""
    return f"outbound|{port}||{service}.{namespace}.svc.cluster.local"


def istio_plugin_json(plugin_config: dict) -> str:
    """pluginConfig as istiod serialises it (protojson of a Struct: compact,
    keys sorted), passed to the plugin as a StringValue."""
    return json.dumps(plugin_config, sort_keys=True, separators=(",", ":"))


def istio_wasm_extension(wasm_path: str, plugin_config: dict, *, name: str = "tollgate",
                         namespace: str = "istio-system", plugin_name: str = "tollgate",
                         kind: str = "WasmPlugin") -> dict:
    """The ECDS resource (TypedExtensionConfig) for one WasmPlugin (or
    TrafficExtension) after the agent downloaded its image: no vm_id (so every
    plugin in the proxy shares one shared-data space), root_id = pluginName,
    no allow_on_headers_stop_iteration (the plugin must run its no-hold
    token path), fail-closed, the code a local file."""
    resource = f"{namespace}.{name}" + ("~istio-translated-wasmplugin" if kind == "WasmPlugin" else "")
    return {
        "name": "extensions.istio.io/trafficextension/" + resource,
        "typed_config": {"@type": WASM_TYPE, "config": {
            "name": resource,
            "root_id": plugin_name,
            "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                              "value": istio_plugin_json(plugin_config)},
            "vm_config": {"runtime": "envoy.wasm.runtime.v8",
                          "code": {"local": {"filename": str(wasm_path)}}},
            "failure_policy": "FAIL_CLOSED",
        }},
    }


def ecds_document(extension: dict) -> dict:
    """A file for Envoy's path_config_source: the discovery response istiod
    would send over ADS."""
    return {"version_info": "1", "resources": [
        {"@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig", **extension}]}


def istio_listener(name: str, port: int, extension_name: str, ecds_path: str, upstream: str, *,
                   token_path: str = "/oauth2/token", buffer_bytes: int = 16384) -> dict:
    """A gateway listener as Istio builds it with envoy/istio/*.yaml applied:
    the AUTHN-phase filter as an ECDS reference that blocks the listener until
    it arrives; the token route (VirtualService `tollgate-token-sink`, a 404
    directResponse) and the EnvoyFilter's buffer filter, disabled except on
    that route, so a token request is answered by the filter after its body
    and its headers never reach the router."""
    ecds = {"name": extension_name, "config_discovery": {
        "config_source": {"path_config_source": {"path": str(ecds_path)},
                          "resource_api_version": "V3", "initial_fetch_timeout": "0s"},
        "type_urls": [WASM_TYPE, RBAC_TYPE]}}
    buffer = {"name": "envoy.filters.http.buffer", "disabled": True,
              "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
                               "max_request_bytes": buffer_bytes}}
    routes = [
        {"name": TOKEN_SINK_ROUTE, "match": {"path": token_path},
         "direct_response": {"status": 404},
         "typed_per_filter_config": {"envoy.filters.http.buffer": {
             "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
             "config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute",
                        "buffer": {"max_request_bytes": buffer_bytes}}}}},
        {"match": {"prefix": "/"}, "route": {"cluster": upstream}},
    ]
    return listener(name, port, routes, [ecds, buffer])


def istio_gateway(*, admin_port: int, upstream_port: int, gateways: list[dict], sidecars: dict[str, int]) -> dict:
    """One Envoy with one listener per entry of `gateways`
    ({"name", "port", "extension_name", "ecds_path"}), each with its own
    Tollgate plugin, and the sidecar clusters named as Istio names them
    ({cluster name: loopback port})."""
    upstream = istio_cluster("api", "default", 8080)
    listeners = [istio_listener(g["name"], g["port"], g["extension_name"], g["ecds_path"], upstream)
                 for g in gateways]
    clusters = [cluster(upstream, upstream_port)] + [cluster(n, p) for n, p in sidecars.items()]
    # xDS subscriptions (ECDS here) need a node identity; this one is shaped
    # like an Istio gateway's.
    node = {"id": "router~127.0.0.1~istio-ingressgateway.istio-system~istio-system.svc.cluster.local",
            "cluster": "istio-ingressgateway.istio-system"}
    return {"node": node, **bootstrap(admin_port, listeners, clusters)}


def main() -> None:
    if sys.argv[1:2] == ["compose"]:
        compose_main(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--admin-port", type=int, required=True)
    ap.add_argument("--upstream-port", type=int, required=True)
    ap.add_argument("--wasm", required=True)
    ap.add_argument("--plugin-config", required=True, help="JSON file with the plugin configuration")
    ap.add_argument("--no-hold", action="store_true", help="do not rely on allow_on_headers_stop_iteration")
    ap.add_argument("--sidecar-port", type=int)
    a = ap.parse_args()
    cfg = gateway(port=a.port, admin_port=a.admin_port, upstream_port=a.upstream_port, wasm_path=a.wasm,
                  plugin_config=json.loads(pathlib.Path(a.plugin_config).read_text()), hold=not a.no_hold,
                  sidecar_port=a.sidecar_port)
    pathlib.Path(a.out).write_text(json.dumps(cfg, indent=1))


if __name__ == "__main__":
    main()
