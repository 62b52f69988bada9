"""Validate rendered manifests offline (run by `cargo xtask manifests`, inside the tools venv).

usage: validate.py CRD_DIR K8S_VERSION... -- FILE...

Every document of every FILE is validated, strictly (unknown fields are errors), against:
- the Kubernetes OpenAPI schemas that kubernetes-validate ships, for each K8S_VERSION;
- for the kinds of the CRDs in CRD_DIR, the CRD's openAPIV3Schema (with its apiVersion/kind);
- monitoring.coreos.com kinds: no schema ships offline; they are listed as such, and the
  PrometheusRule's rules are checked by promtool in xtask.
Exits 1 on the first file with an error, printing file, document, path and message.
"""

import glob
import os
import sys

import jsonschema
import kubernetes_validate.utils as kv
import yaml


def crd_schemas(crd_dir):
    schemas = {}
    for path in sorted(glob.glob(os.path.join(crd_dir, "*.yaml"))):
        with open(path) as f:
            crd = yaml.safe_load(f)
        group = crd["spec"]["group"]
        for version in crd["spec"]["versions"]:
            key = (f"{group}/{version['name']}", crd["spec"]["names"]["kind"])
            schema = dict(version["schema"]["openAPIV3Schema"])
            schemas[key] = schema
    return schemas


def strict(schema):
    """`schema` with unknown fields rejected (the API server prunes them from a CR: an unknown
    field in an example means a typo) and OpenAPI's `nullable` in JSON Schema terms."""
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items() if k not in ("nullable", "format")}
    if "properties" in schema:
        out.setdefault("additionalProperties", False)
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


def top_level(schema):
    """A CRD schema leaves apiVersion, kind and metadata to the API server."""
    out = strict(schema)
    out["properties"].update({"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                              "metadata": {"type": "object"}})
    out["required"] = sorted(set(out.get("required", [])) | {"apiVersion", "kind", "metadata"})
    return out


def main(argv):
    sep = argv.index("--")
    crd_dir, versions, files = argv[0], argv[1:sep], argv[sep + 1:]
    crds = {key: top_level(schema) for key, schema in crd_schemas(crd_dir).items()}
    counts = {"kubernetes": 0, "crd": 0, "unchecked": []}
    for path in files:
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        for i, doc in enumerate(docs):
            where = f"{path}: document {i + 1} ({doc.get('kind')}/{doc.get('metadata', {}).get('name')})"
            key = (doc.get("apiVersion"), doc.get("kind"))
            try:
                if key in crds:
                    jsonschema.Draft202012Validator(crds[key]).validate(doc)
                    counts["crd"] += 1
                elif key[0].startswith("monitoring.coreos.com/"):
                    counts["unchecked"].append(f"{key[1]}/{doc['metadata']['name']}")
                else:
                    for version in versions:
                        kv.validate(doc, version, strict=True)
                    counts["kubernetes"] += 1
            except (jsonschema.ValidationError, kv.SchemaNotFoundError) as e:
                path_ = "/".join(str(p) for p in getattr(e, "absolute_path", []))
                print(f"{where}: {path_}: {getattr(e, 'message', e)}", file=sys.stderr)
                return 1
    print(f"valid: {counts['kubernetes']} objects against Kubernetes {', '.join(versions)}, "
          f"{counts['crd']} against the enforcer CRDs; no offline schema: "
          f"{', '.join(counts['unchecked']) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
