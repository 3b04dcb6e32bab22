"""The Istio manifests in envoy/istio/ without a cluster: they parse; the
Istio resources validate against Istio 1.30.3's own CRD schemas (vendored in
crd-schemas-istio-1.30.3.json) and the checks istiod's webhook adds; and they
agree with each other and with the Envoy config the e2e suite runs
(envoy/render.py), so what is tested is what an operator applies."""
from __future__ import annotations

import json
import re

import pytest
import yaml

import harness
from harness import render

ISTIO_DIR = harness.ROOT / "envoy" / "istio"
MANIFESTS = ["wasmplugin.yaml", "trafficextension.yaml", "sidecar.yaml", "token-route.yaml"]
SCHEMAS = json.loads((ISTIO_DIR / "crd-schemas-istio-1.30.3.json").read_text())["schemas"]


def docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((ISTIO_DIR / name).read_text()) if d]


def one(kind: str) -> dict:
    (found,) = [d for n in MANIFESTS for d in docs(n) if d["kind"] == kind]
    return found


def schema_errors(value, schema: dict, path: str = "") -> list[str]:
    """The structural-schema checks the API server applies to a custom
    resource (types, unknown fields, enums, required, bounds, patterns, and
    the oneOf/anyOf/not constraints Istio uses for exclusive fields); CEL
    rules are checked by hand below."""
    errors: list[str] = []
    if schema.get("nullable") and value is None:
        return errors
    t = schema.get("type")
    if schema.get("x-kubernetes-int-or-string"):
        if not isinstance(value, (int, str)) or isinstance(value, bool):
            errors.append(f"{path}: want int or string")
    elif t == "object":
        if not isinstance(value, dict):
            return [f"{path}: want object, got {type(value).__name__}"]
        props = schema.get("properties")
        for key, item in value.items():
            if props is not None and key in props:
                errors += schema_errors(item, props[key], f"{path}.{key}")
            elif isinstance(schema.get("additionalProperties"), dict):
                errors += schema_errors(item, schema["additionalProperties"], f"{path}.{key}")
            elif props is not None and not schema.get("x-kubernetes-preserve-unknown-fields"):
                errors.append(f"{path}.{key}: unknown field")
        if "maxProperties" in schema and len(value) > schema["maxProperties"]:
            errors.append(f"{path}: too many properties")
    elif t == "array":
        if not isinstance(value, list):
            return [f"{path}: want array"]
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{path}: too many items")
        for i, item in enumerate(value):
            errors += schema_errors(item, schema.get("items", {}), f"{path}[{i}]")
    elif t == "string":
        if not isinstance(value, str):
            return [f"{path}: want string, got {value!r}"]
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{path}: too long")
        if "minLength" in schema and len(value) < schema["minLength"]:
            errors.append(f"{path}: too short")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{path}: does not match {schema['pattern']}")
    elif t == "integer":
        if not isinstance(value, int) or isinstance(value, bool):
            return [f"{path}: want integer, got {value!r}"]
    elif t == "boolean" and not isinstance(value, bool):
        return [f"{path}: want boolean"]
    if t in ("integer", "number") and isinstance(value, (int, float)):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path}: below minimum")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{path}: above maximum")
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} not in {schema['enum']}")
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                errors.append(f"{path}.{key}: required")
    if "oneOf" in schema and sum(not schema_errors(value, s, path) for s in schema["oneOf"]) != 1:
        errors.append(f"{path}: matches not exactly one of oneOf")
    if "anyOf" in schema and not any(not schema_errors(value, s, path) for s in schema["anyOf"]):
        errors.append(f"{path}: matches none of anyOf")
    if "not" in schema and not schema_errors(value, schema["not"], path):
        errors.append(f"{path}: matches a forbidden schema")
    return errors


def test_every_manifest_parses_and_names_itself():
    for name in MANIFESTS:
        for d in docs(name):
            assert d["apiVersion"] and d["kind"] and d["metadata"]["name"], name


@pytest.mark.parametrize("kind", ["WasmPlugin", "TrafficExtension", "VirtualService", "EnvoyFilter"])
def test_istio_resources_match_istio_1_30_crd_schemas(kind):
    doc = one(kind)
    key = doc["apiVersion"] + "/" + kind
    assert key in SCHEMAS, f"{key}: not a served storage version in Istio 1.30.3"
    assert set(doc) <= {"apiVersion", "kind", "metadata", "spec"}
    spec = doc["spec"]
    assert schema_errors(spec, SCHEMAS[key]["properties"]["spec"], ".spec") == []
    # The CRDs' CEL rules.
    assert sum(k in spec for k in ("selector", "targetRef", "targetRefs")) <= 1
    if kind == "TrafficExtension":
        assert ("wasm" in spec) != ("lua" in spec)


def test_schema_check_is_not_a_rubber_stamp():
    wp = one("WasmPlugin")
    schema = SCHEMAS["extensions.istio.io/v1alpha1/WasmPlugin"]
    bad = json.loads(json.dumps(wp))
    bad["spec"]["failStrategy"] = "FAIL_CLOSED"  # Envoy's spelling, not Istio's
    bad["spec"]["vmId"] = "tollgate"  # Istio has no such field
    assert sorted(schema_errors(bad["spec"], schema["properties"]["spec"], ".spec")) == [
        ".spec.failStrategy: 'FAIL_CLOSED' not in ['FAIL_CLOSE', 'FAIL_OPEN', 'FAIL_RELOAD']",
        ".spec.vmId: unknown field",
    ]


def test_wasmplugin_is_what_the_e2e_suite_loads():
    spec = one("WasmPlugin")["spec"]
    assert spec["phase"] == "AUTHN" and spec["failStrategy"] == "FAIL_CLOSE"
    # istiod's webhook: sha256 is 64 lower-case hex (no "sha256:"), the URL an
    # oci:// reference, pluginName at most 256 characters.
    assert re.fullmatch(r"[a-f0-9]{64}", spec["sha256"])
    assert spec["url"].startswith("oci://") and len(spec["pluginName"]) <= 256
    ext = render.istio_wasm_extension("/plugin.wasm", spec["pluginConfig"], plugin_name=spec["pluginName"])
    plugin = ext["typed_config"]["config"]
    assert plugin["root_id"] == spec["pluginName"]
    assert plugin["failure_policy"] == "FAIL_CLOSED"
    assert "vm_id" not in plugin["vm_config"] and "allow_on_headers_stop_iteration" not in plugin
    assert json.loads(plugin["configuration"]["value"]) == spec["pluginConfig"]
    cfg = spec["pluginConfig"]
    assert cfg["hold_token_request_headers"] is False
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", cfg["shared_data_namespace"])


def test_trafficextension_carries_the_same_plugin():
    wp, te = one("WasmPlugin")["spec"], one("TrafficExtension")["spec"]
    for field in ("url", "sha256", "imagePullPolicy", "pluginName", "failStrategy", "type", "pluginConfig"):
        assert te["wasm"][field] == wp[field], field
    assert te["phase"] == wp["phase"] and te["selector"] == wp["selector"]


def test_sidecar_service_is_the_cluster_the_plugin_calls():
    cfg = one("WasmPlugin")["spec"]["pluginConfig"]["sidecar"]
    svc, deploy, secret = one("Service"), one("Deployment"), one("Secret")
    (port,) = svc["spec"]["ports"]
    ns = svc["metadata"]["namespace"]
    assert cfg["cluster"] == render.istio_cluster(svc["metadata"]["name"], ns, port["port"])
    assert cfg["authority"] == f"{svc['metadata']['name']}.{ns}.svc.cluster.local"
    # Istio picks HTTP/1.1 for the port by its name (the cluster name's pipes
    # are not a valid HTTP/2 authority; the filter sets :authority itself).
    assert port["name"].startswith("http-") and port["appProtocol"] == "http"
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert args[0] == "serve"
    assert args[args.index("--listen") + 1].endswith(f":{port['targetPort']}")
    assert svc["spec"]["selector"] == deploy["spec"]["selector"]["matchLabels"]
    # The token files the sidecar reads are the Secret's keys; the plugin's
    # data token is that Secret's data-token.
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    for flag, key in (("--admin-token-file", "admin-token"), ("--data-token-file", "data-token")):
        assert args[args.index(flag) + 1] == f"{mounts['tokens']}/{key}"
        assert key in secret["stringData"]
    assert secret["stringData"]["data-token"] == cfg["data_token"]
    assert deploy["spec"]["replicas"] == 1 and deploy["spec"]["strategy"]["type"] == "Recreate"


def test_token_route_is_what_the_e2e_suite_routes():
    vs, ef = one("VirtualService"), one("EnvoyFilter")
    first = vs["spec"]["http"][0]
    assert first["name"] == render.TOKEN_SINK_ROUTE
    assert first["match"] == [{"uri": {"exact": "/oauth2/token"}}] and first["directResponse"]["status"] == 404
    lst = render.istio_listener("gw", 1, "ext", "/ecds.json", "upstream")
    hcm = lst["filter_chains"][0]["filters"][0]["typed_config"]
    rendered_buffer = hcm["http_filters"][1]
    rendered_route = hcm["route_config"]["virtual_hosts"][0]["routes"][0]
    assert rendered_route["name"] == first["name"] and rendered_route["direct_response"] == {"status": 404}
    filter_patch, route_patch = ef["spec"]["configPatches"]
    assert filter_patch["patch"]["operation"] == "INSERT_BEFORE"
    assert filter_patch["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"] == "envoy.filters.http.router"
    assert filter_patch["patch"]["value"] == rendered_buffer
    assert route_patch["match"]["routeConfiguration"]["vhost"]["route"]["name"] == first["name"]
    assert route_patch["patch"]["value"]["typed_per_filter_config"] == rendered_route["typed_per_filter_config"]
    # The buffer holds at least the largest token request the plugin accepts.
    limit = one("WasmPlugin")["spec"]["pluginConfig"].get("max_token_request_bytes", 16384)
    assert filter_patch["patch"]["value"]["typed_config"]["max_request_bytes"] >= limit
