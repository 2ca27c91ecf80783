"""Extract the JSON schemas that test/deploy/ validates deploy/ against, from pinned PyPI packages.

Writes test/fixtures/schemas/ (see its README for sources and versions):
- kubernetes/<version>/<kind>.json: kubernetes-validate's "-local-strict" schemas (unknown fields
  rejected, as `kubectl apply --validate=strict` does) for the kinds deploy/k8s uses, and
  _definitions.json pruned to the definitions those kinds reach. Descriptions are dropped: they are
  most of the size and validation never reads them.
- compose-spec.json: the Compose Specification schema as check-jsonschema vendors it.
- servicemonitor-monitoring.coreos.com-v1.json: the ServiceMonitor CRD's schema, taken from the
  pydantic models that cloudcoil generates from prometheus-operator's CRDs. Pydantic does not
  carry the CRD's structural strictness, so every object with declared properties is closed
  (additionalProperties: false), matching how the API server treats unknown fields under strict
  field validation.
"""
import json
import pathlib
import shutil
import sys

import check_jsonschema
import kubernetes_validate
from cloudcoil.models.prometheus_operator import v1 as pmo_v1

K8S_VERSION = "v1.35.0"
KINDS = ["deployment-apps-v1", "service-v1", "configmap-v1", "persistentvolumeclaim-v1", "poddisruptionbudget-policy-v1"]

out = pathlib.Path(sys.argv[1])
# Only what this script writes is replaced; the directory's README.md is maintained by hand.
shutil.rmtree(out / "kubernetes", ignore_errors=True)
out.mkdir(parents=True, exist_ok=True)


DOC_KEYS = ("description", "title", "x-kubernetes-group-version-kind")


def strip(node, names=False):
    """Drop documentation-only keys, recursively; `names` marks a map of property/definition names,
    whose keys are data (a property may be called "description") and stay."""
    if isinstance(node, dict):
        if names:
            return {k: strip(v) for k, v in node.items()}
        return {k: strip(v, k in ("properties", "$defs", "patternProperties"))
                for k, v in node.items() if k not in DOC_KEYS}
    if isinstance(node, list):
        return [strip(v) for v in node]
    return node


def refs(node, found):
    if isinstance(node, dict):
        r = node.get("$ref")
        if isinstance(r, str) and "#/$defs/" in r:
            found.add(r.split("#/$defs/")[1])
        for v in node.values():
            refs(v, found)
    elif isinstance(node, list):
        for v in node:
            refs(v, found)


def dump(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")


# Kubernetes
src = pathlib.Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / f"{K8S_VERSION}-local-strict"
defs_all = json.loads((src / "_definitions.json").read_text())
k8s_out = out / "kubernetes" / K8S_VERSION
wanted, queue = set(), []
for kind in KINDS:
    root = json.loads((src / f"{kind}.json").read_text())
    found = set()
    refs(root, found)
    queue.extend(found)
    dump(k8s_out / f"{kind}.json", strip(root))
while queue:
    name = queue.pop()
    if name in wanted:
        continue
    wanted.add(name)
    found = set()
    refs(defs_all["$defs"][name], found)
    queue.extend(found - wanted)
dump(k8s_out / "_definitions.json", {
    "$schema": defs_all["$schema"], "$id": defs_all["$id"],
    "$defs": {n: strip(defs_all["$defs"][n]) for n in sorted(wanted)},
})

# Compose
vendor = pathlib.Path(check_jsonschema.__file__).parent / "builtin_schemas" / "vendor"
shutil.copyfile(vendor / "compose-spec.json", out / "compose-spec.json")
shutil.copyfile(vendor / "licenses" / "LICENSE.compose-spec", out / "LICENSE.compose-spec")

# ServiceMonitor


def close(node):
    if isinstance(node, dict):
        node = {k: close(v) for k, v in node.items()}
        if node.get("type") == "object" and "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        return node
    if isinstance(node, list):
        return [close(v) for v in node]
    return node


sm = pmo_v1.ServiceMonitor.model_json_schema(by_alias=True, mode="validation")
sm = close(strip(sm))
sm["$schema"] = "https://json-schema.org/draft/2020-12/schema"
sm["$id"] = "https://alignd.local/schemas/servicemonitor-monitoring.coreos.com-v1.json"
dump(out / "servicemonitor-monitoring.coreos.com-v1.json", sm)
print(f"wrote {out}")
