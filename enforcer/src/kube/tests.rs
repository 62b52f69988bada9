//! The CRD spec and the engine's `FlowPolicy` stay one language: same keys, same meaning.

use std::collections::BTreeSet;
use std::path::Path;

use kube::CustomResourceExt;
use serde_yaml_ng::Value;

use super::convert::{cluster_flow_policy, flow_policy_document};
use super::crd::{ClusterFlowPolicy, FlowPolicy, FlowPolicySpec};
use crate::policy::parse::{
    parse_documents, FLOW_POLICY_FIELDS, PEER_FIELDS, PORT_FIELDS, RATE_LIMIT_FIELDS,
};

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// The property names of the object schema at `path` (keys through `properties`/`items`).
fn keys(schema: &serde_json::Value, path: &[&str]) -> BTreeSet<String> {
    let mut node = schema;
    for key in path {
        node = if *key == "[]" {
            &node["items"]
        } else {
            &node["properties"][*key]
        };
    }
    let props = node["properties"].as_object();
    props
        .unwrap_or_else(|| panic!("no properties at {path:?}"))
        .keys()
        .cloned()
        .collect()
}

fn set(keys: &[&str]) -> BTreeSet<String> {
    keys.iter().map(|k| (*k).to_owned()).collect()
}

#[test]
fn crd_schema_has_exactly_the_engine_keys() {
    for crd in [FlowPolicy::crd(), ClusterFlowPolicy::crd()] {
        let version = &crd.spec.versions[0];
        let schema =
            serde_json::to_value(&version.schema.as_ref().unwrap().open_api_v3_schema).unwrap();
        let spec = ["spec"];
        assert_eq!(
            keys(&schema, &spec),
            set(FLOW_POLICY_FIELDS),
            "{}",
            crd.spec.names.kind
        );
        let ingress = ["spec", "ingress", "[]"];
        assert_eq!(
            keys(&schema, &ingress),
            set(&["from", "ports", "rateLimit"])
        );
        {
            let section = "ingressDeny";
            assert_eq!(
                keys(&schema, &["spec", section, "[]"]),
                set(&["from", "ports"])
            );
        }
        for section in ["egress", "egressDeny"] {
            assert_eq!(
                keys(&schema, &["spec", section, "[]"]),
                set(&["to", "ports"])
            );
        }
        let peer = ["spec", "ingress", "[]", "from", "[]"];
        assert_eq!(keys(&schema, &peer), set(PEER_FIELDS));
        let port = ["spec", "egress", "[]", "ports", "[]"];
        assert_eq!(keys(&schema, &port), set(PORT_FIELDS));
        let limit = ["spec", "ingress", "[]", "rateLimit"];
        assert_eq!(keys(&schema, &limit), set(RATE_LIMIT_FIELDS));
    }
}

/// Every `FlowPolicy` mapping inside `value` (scenario files nest them under steps).
fn flow_policies(value: &Value, out: &mut Vec<Value>) {
    match value {
        Value::Mapping(map) => {
            if map.get("kind").and_then(Value::as_str) == Some("FlowPolicy") {
                out.push(value.clone());
            }
            map.values().for_each(|v| flow_policies(v, out));
        }
        Value::Sequence(seq) => seq.iter().for_each(|v| flow_policies(v, out)),
        _ => {}
    }
}

/// Each valid `FlowPolicy` of the scenario files, read as a CRD spec and converted, is the document
/// the engine parses from the original.
#[test]
fn every_scenario_flow_policy_converts_to_the_same_document() {
    let mut checked = 0;
    for entry in std::fs::read_dir(workspace().join("tests/scenarios")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let mut found = Vec::new();
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let value = <Value as serde::Deserialize>::deserialize(doc).unwrap();
            flow_policies(&value, &mut found);
        }
        for policy in found {
            let yaml = serde_yaml_ng::to_string(&policy).unwrap();
            let Ok(mut original) = parse_documents("original", &yaml) else {
                continue; // an invalid policy on purpose: the engine rejects it either way
            };
            let name = policy["metadata"]["name"].as_str().unwrap();
            let spec: FlowPolicySpec = serde_yaml_ng::from_value(policy["spec"].clone())
                .unwrap_or_else(|e| panic!("{}: {name}: not a CRD spec: {e}", path.display()));
            let converted = flow_policy_document("crd", name, None, &spec)
                .unwrap_or_else(|e| panic!("{}: {name}: {e}", path.display()));
            let original = original.pop().unwrap();
            assert!(
                converted.same_content(&original),
                "{}: {name}: {converted:?}\n!=\n{original:?}",
                path.display()
            );
            checked += 1;
        }
    }
    assert!(checked >= 40, "only {checked} policies checked");
}

#[test]
fn null_rule_list_still_isolates() {
    let spec: FlowPolicySpec = serde_yaml_ng::from_str("service: api\ningress:\n").unwrap();
    assert_eq!(spec.ingress, Some(vec![]));
    let absent: FlowPolicySpec = serde_yaml_ng::from_str("service: api\n").unwrap();
    assert_eq!(absent.ingress, None);
}

#[test]
fn invalid_spec_is_rejected_with_the_engines_message() {
    let yaml = "apiVersion: enforcer.dev/v1alpha1\nkind: ClusterFlowPolicy\n\
                metadata: {name: bad}\nspec:\n  service: api\n  ingress:\n    \
                - from: [{cidr: 10.0.0.1/24}]\n";
    let policy: ClusterFlowPolicy = serde_yaml_ng::from_str(yaml).unwrap();
    let err = cluster_flow_policy(&policy).unwrap_err().to_string();
    assert!(err.contains("ClusterFlowPolicy/bad"), "{err}");
    assert!(err.contains("host bits set"), "{err}");
}

#[test]
fn checked_in_crds_are_up_to_date() {
    let dir = workspace().join("deploy/kubernetes/base/crds");
    for (name, yaml) in super::crd_files().unwrap() {
        let path = dir.join(&name);
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == yaml,
            "{} is stale: run `cargo run -p enforcer -- crds --write deploy/kubernetes/base/crds`",
            path.display()
        );
    }
}

/// The example objects in deploy/kubernetes/examples are CRD objects the engine accepts.
#[test]
fn example_objects_convert() {
    let dir = workspace().join("deploy/kubernetes/examples");
    let mut count = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let policy: ClusterFlowPolicy =
            serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        cluster_flow_policy(&policy).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        count += 1;
    }
    assert!(count >= 2);
}
