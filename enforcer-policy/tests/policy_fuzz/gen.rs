//! Structure-aware inputs: documents of every kind (enforcer/v1 `Workload` and `FlowPolicy`,
//! v1 `Namespace`, `Pod` and `List`, networking.k8s.io/v1 `NetworkPolicy`), mostly shaped like the
//! schema, with values drawn from the edges of each field's domain, now and then a value of
//! the wrong type or an unknown key; several documents per input, printed as block YAML or
//! as JSON (flow YAML).

use proptest::collection::vec;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

type S = BoxedStrategy<Value>;

/// Any small value: scalars, lists, mappings (for wrong types).
fn junk() -> S {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        text(),
    ];
    leaf.prop_recursive(3, 12, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::from),
            vec(("[a-zA-Z]{1,6}", inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
    .boxed()
}

/// Strings from the edges of every field: names, addresses, CIDRs, protocols, keywords.
fn text() -> S {
    const WORDS: &[&str] = &[
        "web",
        "api",
        "*",
        "",
        " ",
        "a b",
        "Web_0!",
        "x.y-z",
        "10.0.0.1",
        "10.0.0.300",
        "0.0.0.0",
        "255.255.255.255",
        "224.0.0.1",
        "fd00::1",
        "::ffff:10.0.0.1",
        "10.0.0.0/8",
        "10.0.0.5/24",
        "10.0.0.0/33",
        "fd00::/64",
        "::ffff:10.0.0.0/104",
        "0.0.0.0/0",
        "TCP",
        "udp",
        "SCTP",
        "ICMP",
        "HTTP",
        "http",
        "dns-tcp",
        "-bad",
        "enforce",
        "audit",
        "block",
        "source",
        "rule",
        "In",
        "NotIn",
        "Exists",
        "DoesNotExist",
        "Like",
        "Ingress",
        "Egress",
        "enforcer/v1",
        "v1",
        "networking.k8s.io/v1",
        "Workload",
        "FlowPolicy",
        "Pod",
        "List",
        "app.kubernetes.io/name",
        "kubernetes.io/metadata.name",
        "ns/x",
        "80",
        "0x50",
        "1e3",
        "~",
        "null",
        "true",
        "&a",
        "*a",
        "!tag",
        "- x",
        "a: b",
        "#",
        "'",
        "\"",
        "\t",
        "ü",
    ];
    prop_oneof![
        8 => proptest::sample::select(WORDS).prop_map(Value::from),
        1 => "[ -~]{0,12}".prop_map(Value::from),
        1 => (1usize..400).prop_map(|n| Value::from("a".repeat(n))),
    ]
    .boxed()
}

/// A port number from the edges of its range.
fn port_number() -> S {
    prop_oneof![
        proptest::sample::select(&[0i64, 1, 53, 80, 8080, 65535, 65536, -1, 99_999][..]),
        any::<i64>(),
    ]
    .prop_map(Value::from)
    .boxed()
}

/// Mostly `good`, sometimes anything.
fn or_junk(good: S) -> S {
    prop_oneof![9 => good, 1 => junk()].boxed()
}

/// A mapping with each field present with probability 3/4, and now and then an unknown key.
fn object(fields: Vec<(&'static str, S)>) -> S {
    let present: Vec<_> = fields
        .into_iter()
        .map(|(k, v)| prop::option::weighted(0.75, v).prop_map(move |v| v.map(|v| (k, v))))
        .collect();
    let extra = prop::option::weighted(0.05, ("[a-z]{1,8}", junk()));
    (present, extra)
        .prop_map(|(fields, extra)| {
            let mut map: Map<String, Value> = fields
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            if let Some((k, v)) = extra {
                map.insert(k, v);
            }
            Value::Object(map)
        })
        .boxed()
}

fn list(item: S, max: usize) -> S {
    or_junk(vec(item, 0..max).prop_map(Value::from).boxed())
}

fn labels() -> S {
    or_junk(
        vec((text(), text()), 0..3)
            .prop_map(|kv| {
                let map: Map<String, Value> = kv
                    .into_iter()
                    .map(|(k, v)| (k.as_str().unwrap_or("k").to_string(), v))
                    .collect();
                Value::Object(map)
            })
            .boxed(),
    )
}

fn metadata() -> S {
    object(vec![
        ("name", or_junk(text())),
        ("namespace", or_junk(text())),
        ("labels", labels()),
    ])
}

fn selector() -> S {
    let expression = object(vec![
        ("key", or_junk(text())),
        ("operator", or_junk(text())),
        ("values", list(text(), 3)),
    ]);
    object(vec![
        ("matchLabels", labels()),
        ("matchExpressions", list(expression, 3)),
    ])
}

fn head(api_version: &'static str, kind: &'static str, rest: Vec<(&'static str, S)>) -> S {
    let mut fields = vec![
        (
            "apiVersion",
            or_junk(Just(Value::from(api_version)).boxed()),
        ),
        ("kind", or_junk(Just(Value::from(kind)).boxed())),
        ("metadata", metadata()),
    ];
    fields.extend(rest);
    object(fields)
}

fn workload() -> S {
    let named = object(vec![
        ("name", text()),
        ("containerPort", port_number()),
        ("protocol", text()),
    ]);
    let spec = object(vec![
        ("service", or_junk(text())),
        ("addresses", list(text(), 4)),
        ("ports", list(named, 3)),
    ]);
    head("enforcer/v1", "Workload", vec![("spec", spec)])
}

fn flow_policy() -> S {
    let peer = object(vec![
        ("service", or_junk(text())),
        ("cidr", or_junk(text())),
        ("except", list(text(), 3)),
        ("selector", selector()),
        ("namespaceSelector", selector()),
    ]);
    let port = object(vec![
        ("protocol", or_junk(text())),
        ("port", prop_oneof![port_number(), text()].boxed()),
        ("endPort", port_number()),
    ]);
    let rate = object(vec![
        (
            "packetsPerSecond",
            or_junk(any::<i64>().prop_map(Value::from).boxed()),
        ),
        (
            "bytesPerSecond",
            or_junk(any::<i64>().prop_map(Value::from).boxed()),
        ),
        ("burst", or_junk(any::<i64>().prop_map(Value::from).boxed())),
        ("per", or_junk(text())),
    ]);
    let rule = object(vec![
        ("from", list(peer.clone(), 3)),
        ("to", list(peer, 3)),
        ("ports", list(port, 3)),
        ("rateLimit", rate),
    ]);
    let spec = object(vec![
        ("service", or_junk(text())),
        ("selector", selector()),
        ("mode", or_junk(text())),
        ("ingress", list(rule.clone(), 3)),
        ("egress", list(rule.clone(), 3)),
        ("ingressDeny", list(rule.clone(), 2)),
        ("egressDeny", list(rule, 2)),
    ]);
    head("enforcer/v1", "FlowPolicy", vec![("spec", spec)])
}

fn namespace() -> S {
    head("v1", "Namespace", vec![])
}

fn pod() -> S {
    let port = object(vec![
        ("name", or_junk(text())),
        ("containerPort", port_number()),
        ("protocol", or_junk(text())),
    ]);
    let container = object(vec![("name", text()), ("ports", list(port, 3))]);
    let spec = object(vec![
        (
            "hostNetwork",
            or_junk(any::<bool>().prop_map(Value::from).boxed()),
        ),
        ("containers", list(container, 2)),
    ]);
    let ip = object(vec![("ip", or_junk(text()))]);
    let status = object(vec![("podIP", or_junk(text())), ("podIPs", list(ip, 3))]);
    head("v1", "Pod", vec![("spec", spec), ("status", status)])
}

fn network_policy() -> S {
    let block = object(vec![("cidr", or_junk(text())), ("except", list(text(), 3))]);
    let peer = object(vec![
        ("podSelector", selector()),
        ("namespaceSelector", selector()),
        ("ipBlock", block),
    ]);
    let port = object(vec![
        ("protocol", or_junk(text())),
        ("port", prop_oneof![port_number(), text()].boxed()),
        ("endPort", port_number()),
    ]);
    let ingress = object(vec![
        ("from", list(peer.clone(), 3)),
        ("ports", list(port.clone(), 3)),
    ]);
    let egress = object(vec![("to", list(peer, 3)), ("ports", list(port, 3))]);
    let spec = object(vec![
        ("podSelector", selector()),
        ("policyTypes", list(text(), 3)),
        ("ingress", list(ingress, 3)),
        ("egress", list(egress, 3)),
    ]);
    head(
        "networking.k8s.io/v1",
        "NetworkPolicy",
        vec![("spec", spec)],
    )
}

/// One document of any kind, or a `v1 List` of them.
fn document() -> S {
    let single = prop_oneof![
        3 => workload(),
        4 => flow_policy(),
        1 => namespace(),
        2 => pod(),
        3 => network_policy(),
        1 => junk(),
    ]
    .boxed();
    let items = list(single.clone(), 4);
    let list_doc = head("v1", "List", vec![("items", items)]);
    prop_oneof![6 => single, 1 => list_doc].boxed()
}

/// How a document is printed.
fn render(doc: &Value, json: bool) -> String {
    if json {
        serde_json::to_string(doc).unwrap_or_default()
    } else {
        serde_yaml_ng::to_string(doc).unwrap_or_default()
    }
}

/// An input of 1 to 4 documents, each printed as block YAML or JSON, separated by `---`.
pub fn input() -> BoxedStrategy<String> {
    vec((document(), prop::bool::weighted(0.3)), 1..4)
        .prop_map(|docs| {
            docs.iter()
                .map(|(doc, json)| render(doc, *json))
                .collect::<Vec<_>>()
                .join("\n---\n")
        })
        .boxed()
}
