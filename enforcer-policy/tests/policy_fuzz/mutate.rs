//! Byte mutations of valid and malformed examples (the catalogue `tests/malformed/`, the
//! `examples/` policies and the inline valid documents below) and of generated inputs: flips,
//! insertions of YAML-significant bytes, deletions, duplications, truncations.

use std::path::Path;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

/// Valid documents of every kind, beside the files.
const VALID: &[&str] = &[
    "apiVersion: enforcer/v1\nkind: Workload\nmetadata: {name: web-0, labels: {tier: front}}\nspec:\n  service: web\n  addresses: [10.10.1.10, \"fd00:10::10\"]\n  ports: [{name: http, containerPort: 8080, protocol: TCP}]\n",
    "apiVersion: enforcer/v1\nkind: FlowPolicy\nmetadata: {name: api-ingress, namespace: prod}\nspec:\n  service: api\n  mode: audit\n  ingress:\n    - from: [{service: web}, {cidr: 192.0.2.0/24, except: [192.0.2.128/25]}, {selector: {matchLabels: {a: b}}, namespaceSelector: {matchExpressions: [{key: team, operator: In, values: [x]}]}}]\n      ports: [{protocol: TCP, port: 8080}, {port: http}, {protocol: UDP, port: 9000, endPort: 9010}, {protocol: ICMP}]\n      rateLimit: {packetsPerSecond: 100, bytesPerSecond: 5000, burst: 20, per: rule}\n  egress:\n    - to: [{service: db}]\n  ingressDeny:\n    - from: [{service: batch}]\n  egressDeny: []\n",
    "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n  metadata: {name: x, labels: {ns: x}}\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: a, namespace: x, labels: {pod: a}}\n  spec:\n    hostNetwork: false\n    containers: [{name: c, ports: [{name: http, containerPort: 80}, {containerPort: 53, protocol: UDP}]}]\n  status: {podIP: 10.0.1.1, podIPs: [{ip: 10.0.1.1}, {ip: 'fd00::1'}]}\nmetadata: {resourceVersion: ''}\n",
    "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: np, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Ingress, Egress]\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: y}}\n      podSelector: {matchExpressions: [{key: pod, operator: NotIn, values: [c]}]}\n    - ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}\n    ports: [{port: 80}, {protocol: UDP, port: dns}, {port: 9000, endPort: 9100}]\n  egress:\n  - to: [{podSelector: {}}]\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: y}\n",
    "a: &x [1, 2, {b: *x}]\n--- !!map\n? [k]\n: v\n...\n",
];

/// Every seed: the inline documents and the `.yaml` files of the catalogue and examples.
pub fn seeds() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut seeds: Vec<String> = VALID.iter().map(|s| (*s).to_string()).collect();
    for dir in ["tests/malformed", "examples"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            panic!("missing seed directory {dir}");
        };
        let mut files: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
        files.sort();
        for path in files
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        {
            seeds.push(std::fs::read_to_string(path).expect("read a seed"));
        }
    }
    seeds
}

/// Bytes that matter to YAML.
const SPECIAL: &[u8] = b"-:[]{},&*!|>'\"#%@`?\n\r\t 0123456789.~/\\";

#[derive(Debug, Clone)]
enum Mutation {
    Flip(Index, u8),
    Insert(Index, u8),
    Delete(Index, usize),
    Duplicate(Index, usize),
    Truncate(Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let byte = prop_oneof![3 => proptest::sample::select(SPECIAL), 1 => any::<u8>()];
    prop_oneof![
        (any::<Index>(), byte.clone()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<Index>(), byte).prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<Index>(), 1usize..40).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (any::<Index>(), 1usize..200).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
        any::<Index>().prop_map(Mutation::Truncate),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let len = bytes.len();
    if len == 0 {
        if let Mutation::Insert(_, b) = m {
            bytes.push(*b);
        }
        return;
    }
    match m {
        Mutation::Flip(i, b) => bytes[i.index(len)] = *b,
        Mutation::Insert(i, b) => bytes.insert(i.index(len + 1), *b),
        Mutation::Delete(i, n) => {
            let at = i.index(len);
            bytes.drain(at..(at + n).min(len));
        }
        Mutation::Duplicate(i, n) => {
            let at = i.index(len);
            let piece: Vec<u8> = bytes[at..(at + n).min(len)].to_vec();
            bytes.splice(at..at, piece);
        }
        Mutation::Truncate(i) => bytes.truncate(i.index(len)),
    }
}

/// `text` with 1 to 8 mutations (as text: invalid UTF-8 becomes U+FFFD, as a file read by
/// the agent would be refused before parsing).
pub fn mutated(text: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
    (text, vec(mutation(), 1..8)).prop_map(|(text, mutations)| {
        let mut bytes = text.into_bytes();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}
