//! Reading Kubernetes objects, and the `NetworkPolicy` semantics through `explain`.

use std::net::IpAddr;

use crate::{explain, parse::parse_documents, Document, Flow, NodeContext, PolicySet, Verdict};

fn set(text: &str) -> PolicySet {
    let docs = parse_documents("k.yaml", text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    PolicySet::from_documents(docs).expect("set")
}

fn errors(text: &str) -> String {
    match parse_documents("k.yaml", text) {
        Ok(d) => panic!("accepted {d:?}"),
        Err(e) => e.to_string(),
    }
}

fn ns(name: &str, labels: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}, labels: {{{labels}}}}}\n---\n"
    )
}

fn pod(ns: &str, name: &str, labels: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {{{labels}}}}}\n\
         spec: {{containers: [{{name: c, ports: [{{name: http, containerPort: 80}}, {{name: dns, containerPort: 53, protocol: UDP}}]}}]}}\n\
         status: {{podIP: {ip}, podIPs: [{{ip: {ip}}}]}}\n---\n"
    )
}

fn netpol(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}---\n"
    )
}

/// Namespaces x (ns=x) and y (ns=y); pods x/a (pod=a), x/b (pod=b), y/a (pod=a), y/c (pod=c).
fn world(policies: &str) -> PolicySet {
    let text = [
        ns("x", "ns: x"),
        ns("y", "ns: y"),
        pod("x", "a", "pod: a", "10.0.1.1"),
        pod("x", "b", "pod: b", "10.0.1.2"),
        pod("y", "a", "pod: a", "10.0.2.1"),
        pod("y", "c", "pod: c", "10.0.2.3"),
        policies.to_string(),
    ]
    .concat();
    set(&text)
}

fn verdict(set: &PolicySet, src: &str, dst: &str, protocol: u8, port: u16) -> Verdict {
    let addr = |s: &str| -> IpAddr { s.parse().expect("ip") };
    let flow = Flow {
        src: addr(src),
        dst: addr(dst),
        protocol,
        port,
    };
    explain(set, &NodeContext::default(), &flow).verdict
}

const XA: &str = "10.0.1.1";
const XB: &str = "10.0.1.2";
const YA: &str = "10.0.2.1";
const YC: &str = "10.0.2.3";
const TCP: u8 = 6;
const UDP: u8 = 17;
use Verdict::{Allow, Deny};

#[test]
fn kubectl_output_with_unknown_fields_and_lists() {
    let text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n  metadata:\n    name: a\n    namespace: x\n    uid: 1\n    managedFields: [{manager: kubectl}]\n    annotations: {a: b}\n  spec:\n    hostNetwork: false\n    containers: [{name: c, image: i, ports: [{containerPort: 80}]}]\n  status:\n    phase: Running\n    conditions: [{type: Ready}]\n    podIP: 10.0.0.1\n    podIPs: [{ip: 10.0.0.1}, {ip: 'fd00::1'}]\nmetadata: {resourceVersion: ''}\n";
    let docs = parse_documents("k.yaml", text).expect("valid");
    let Document::Pod(p) = &docs[0] else {
        panic!("{docs:?}")
    };
    assert_eq!((p.namespace.as_str(), p.name.as_str()), ("x", "a"));
    assert_eq!(p.addresses.len(), 2);
    assert_eq!(p.source.line, 4);
    // Round trip through the canonical form.
    let back = parse_documents("k.yaml", &docs[0].to_yaml().expect("yaml")).expect("back");
    assert!(back[0].same_content(&docs[0]));
}

/// `kubectl get pods -A -o yaml` lists finished pods (Jobs) whose addresses running pods hold
/// now: a finished pod holds no address, so the listing applies and the running pod owns it.
#[test]
fn finished_pods_hold_no_address() {
    let finished = |phase: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: job-{phase}, namespace: x}}\nstatus:\n  phase: {phase}\n  podIP: 10.0.0.1\n  podIPs: [{{ip: 10.0.0.1}}]\n"
        )
    };
    let running = "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: x}\nstatus: {phase: Running, podIP: 10.0.0.1}\n";
    let text = format!(
        "{}---\n{}---\n{running}",
        finished("Succeeded"),
        finished("Failed")
    );
    let s = set(&text);
    let holders: Vec<&str> = s
        .pods
        .values()
        .filter(|p| !p.addresses.is_empty())
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(holders, ["web"]);
}

#[test]
fn errors_keep_file_line_column() {
    let bad_op = netpol(
        "x",
        "p",
        "  podSelector:\n    matchExpressions: [{key: a, operator: Equals}]\n",
    );
    let e = errors(&bad_op);
    assert!(e.starts_with("k.yaml:6:43:"), "{e}");
    assert!(e.contains("Equals"), "{e}");
    let e = errors(&netpol("x", "p", "  ingress:\n  - from: [{}]\n"));
    assert!(e.contains("k.yaml:6:") && e.contains("a peer needs"), "{e}");
    let e = errors(&netpol(
        "x",
        "p",
        "  ingress:\n  - ports: [{port: 80, endPort: 70}]\n",
    ));
    assert!(e.contains("endPort 70 is less than port 80"), "{e}");
    let e = errors(&netpol(
        "x",
        "p",
        "  podSelector: {matchExpressions: [{key: a, operator: In, values: []}]}\n",
    ));
    assert!(e.contains("at least one value"), "{e}");
    let e = errors(&netpol(
        "x",
        "p",
        "  egress:\n  - to: [{ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/16]}}]\n",
    ));
    assert!(e.contains("strict subset"), "{e}");
    let e = errors(&netpol(
        "x",
        "p",
        "  egress:\n  - to: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]\n",
    ));
    assert!(e.contains("ipBlock may not have"), "{e}");
    let e = errors(&netpol("x", "p", "  policyTypes: [Ingres]\n"));
    assert!(e.contains("Ingres"), "{e}");
    let e = errors(&netpol(
        "x",
        "p",
        "  ingress:\n  - ports: [{protocol: ICMP}]\n",
    ));
    assert!(e.contains("unsupported protocol"), "{e}");
    let e = errors("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nstatus: {podIP: nope}\n");
    assert!(e.contains("not a valid IP"), "{e}");
}

#[test]
fn typos_in_a_network_policy_spec_are_errors_at_their_line() {
    // Every level of the spec is strict (as kube-apiserver with strict field validation);
    // the same policy without the typo is accepted.
    let cases = [
        ("  podSelecter: {}\n", 5, 3, "podSelecter"),
        ("  podSelector: {}\n  ingres: []\n", 6, 3, "ingres"),
        ("  ingress:\n  - form: [{podSelector: {}}]\n", 6, 5, "form"),
        (
            "  ingress:\n  - from:\n    - podSelector: {}\n      namespaceSelecter: {}\n",
            8,
            7,
            "namespaceSelecter",
        ),
        (
            "  egress:\n  - to: [{ipBlock: {cidr: 10.0.0.0/8, excpet: []}}]\n",
            6,
            39,
            "excpet",
        ),
        (
            "  egress:\n  - ports: [{port: 80, protocl: UDP}]\n",
            6,
            24,
            "protocl",
        ),
        ("  podSelector: {matchLabel: {a: b}}\n", 5, 17, "matchLabel"),
        (
            "  podSelector:\n    matchExpressions: [{key: a, operator: Exists, value: [b]}]\n",
            6,
            51,
            "value",
        ),
    ];
    for (spec, line, column, field) in cases {
        let e = errors(&netpol("x", "p", spec));
        let at = format!("k.yaml:{line}:{column}: ");
        assert!(e.starts_with(&at), "{e}\n{spec}");
        assert!(e.contains(&format!("unknown field `{field}`")), "{e}");
        let fixed = spec
            .replace("podSelecter", "podSelector")
            .replace("ingres:", "ingress:")
            .replace("form:", "from:")
            .replace("namespaceSelecter", "namespaceSelector")
            .replace("excpet", "except")
            .replace("protocl", "protocol")
            .replace("matchLabel:", "matchLabels:")
            .replace(", value: [b]", "");
        set(&netpol("x", "p", &fixed));
    }
    // Fields of the object outside spec that enforcer does not read stay ignored.
    let text = netpol("x", "p", "  podSelector: {}\n")
        .replace("metadata: {", "status: {}\nmetadata: {generation: 1, ");
    set(&text);
}

#[test]
fn an_invalid_pod_ip_is_reported_at_its_line() {
    let e =
        errors("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nstatus:\n  podIP: 10.0.0.999\n");
    assert!(e.starts_with("k.yaml:5:10: "), "{e}");
    assert!(
        e.contains("\"10.0.0.999\" is not a valid IP address"),
        "{e}"
    );
    let e = errors(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nstatus:\n  podIP: 10.0.0.9\n  podIPs:\n  - ip: 10.0.0.9\n  - ip: 'fd00::x'\n",
    );
    assert!(e.starts_with("k.yaml:8:9: "), "{e}");
    let ok = set("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nstatus:\n  podIP: 10.0.0.9\n");
    assert!(!ok.is_empty());
}

#[test]
fn isolation_and_policy_types() {
    let s = world("");
    assert_eq!(verdict(&s, XB, XA, TCP, 80), Allow);
    // Deny all ingress to x/a.
    let s = world(&netpol(
        "x",
        "deny",
        "  podSelector: {matchLabels: {pod: a}}\n",
    ));
    assert_eq!(verdict(&s, XB, XA, TCP, 80), Deny);
    assert_eq!(verdict(&s, XA, XB, TCP, 80), Allow, "egress not isolated");
    assert_eq!(verdict(&s, YA, YC, TCP, 80), Allow, "other namespace");
    // Egress rules without policyTypes: Ingress and Egress.
    let s = world(&netpol(
        "x",
        "e",
        "  podSelector: {}\n  egress:\n  - to: [{namespaceSelector: {matchLabels: {ns: y}}}]\n",
    ));
    assert_eq!(verdict(&s, XA, YA, TCP, 80), Allow);
    assert_eq!(verdict(&s, XA, XB, TCP, 80), Deny);
    assert_eq!(verdict(&s, YA, XA, TCP, 80), Deny, "ingress isolated too");
    // policyTypes [Egress] only: the ingress rules are ignored, ingress stays open.
    let s = world(&netpol(
        "x",
        "e",
        "  podSelector: {}\n  policyTypes: [Egress]\n  ingress: []\n",
    ));
    assert_eq!(verdict(&s, YA, XA, TCP, 80), Allow);
    assert_eq!(verdict(&s, XA, YA, TCP, 80), Deny);
    // An empty egress list without policyTypes does not isolate egress (API defaulting).
    let s = world(&netpol("x", "e", "  podSelector: {}\n  egress: []\n"));
    assert_eq!(verdict(&s, XA, YA, TCP, 80), Allow);
}

#[test]
fn peers() {
    let rule = |peer: &str| {
        world(&netpol(
            "x",
            "p",
            &format!(
                "  podSelector: {{matchLabels: {{pod: a}}}}\n  ingress:\n  - from: [{peer}]\n"
            ),
        ))
    };
    // podSelector alone: the policy's namespace.
    let s = rule("{podSelector: {matchLabels: {pod: b}}}");
    assert_eq!(verdict(&s, XB, XA, TCP, 80), Allow);
    assert_eq!(verdict(&s, YC, XA, TCP, 80), Deny);
    // namespaceSelector alone: every pod of the matching namespaces.
    let s = rule("{namespaceSelector: {matchLabels: {ns: y}}}");
    assert_eq!(verdict(&s, YC, XA, TCP, 80), Allow);
    assert_eq!(verdict(&s, XB, XA, TCP, 80), Deny);
    // Both: AND.
    let s = rule("{namespaceSelector: {}, podSelector: {matchLabels: {pod: c}}}");
    assert_eq!(verdict(&s, YC, XA, TCP, 80), Allow);
    assert_eq!(verdict(&s, YA, XA, TCP, 80), Deny);
    // Implicit namespace name label.
    let s = rule("{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: y}}}");
    assert_eq!(verdict(&s, YA, XA, TCP, 80), Allow);
    // NotIn and DoesNotExist match pods without the key.
    let s = rule("{namespaceSelector: {}, podSelector: {matchExpressions: [{key: pod, operator: NotIn, values: [a]}]}}");
    assert_eq!(verdict(&s, YC, XA, TCP, 80), Allow);
    assert_eq!(verdict(&s, YA, XA, TCP, 80), Deny);
    // ipBlock matches pod addresses; except carves out.
    let s = rule("{ipBlock: {cidr: 10.0.2.0/24, except: [10.0.2.1/32]}}");
    assert_eq!(verdict(&s, YC, XA, TCP, 80), Allow);
    assert_eq!(verdict(&s, YA, XA, TCP, 80), Deny);
    // Host bits are ignored, as the API server does.
    let s = rule("{ipBlock: {cidr: 10.0.2.3/16}}");
    assert_eq!(verdict(&s, YA, XA, TCP, 80), Allow);
    // An empty from: every peer (world too).
    let s = rule("");
    assert_eq!(verdict(&s, "192.0.2.1", XA, TCP, 80), Allow);
}

#[test]
fn ports_and_named_ports() {
    let ports = |ports: &str| {
        world(&netpol(
            "x",
            "p",
            &format!("  podSelector: {{}}\n  ingress:\n  - ports: [{ports}]\n  egress:\n  - ports: [{ports}]\n"),
        ))
    };
    let s = ports("{port: http}");
    assert_eq!(verdict(&s, YA, XA, TCP, 80), Allow);
    assert_eq!(verdict(&s, YA, XA, TCP, 81), Deny);
    assert_eq!(verdict(&s, YA, XA, UDP, 80), Deny, "the name's protocol");
    // Egress to a non-pod: a named port matches nothing.
    assert_eq!(verdict(&s, XA, "192.0.2.1", TCP, 80), Deny);
    assert_eq!(
        verdict(&s, XA, YA, TCP, 80),
        Allow,
        "resolved on the destination pod"
    );
    let s = ports("{protocol: UDP, port: dns}");
    assert_eq!(verdict(&s, YA, XA, UDP, 53), Allow);
    let s = ports("{port: 8000, endPort: 8100}");
    assert_eq!(verdict(&s, YA, XA, TCP, 8100), Allow);
    assert_eq!(verdict(&s, YA, XA, TCP, 8101), Deny);
    let s = ports("{protocol: UDP}");
    assert_eq!(verdict(&s, YA, XA, UDP, 9), Allow);
    assert_eq!(verdict(&s, YA, XA, TCP, 9), Deny);
}

#[test]
fn union_with_flow_policy_and_deny_wins() {
    let text = [
        netpol("x", "p", "  podSelector: {}\n  ingress:\n  - from: [{podSelector: {}}]\n"),
        "apiVersion: enforcer/v1\nkind: FlowPolicy\nmetadata: {name: f}\nspec:\n  service: '*'\n  ingress:\n  - from: [{namespaceSelector: {matchLabels: {ns: y}}, selector: {matchLabels: {pod: c}}}]\n  ingressDeny:\n  - from: [{selector: {matchLabels: {pod: b}}}]\n---\n".to_string(),
    ]
    .concat();
    let s = world(&text);
    assert_eq!(verdict(&s, YC, XA, TCP, 80), Allow, "FlowPolicy allows");
    assert_eq!(verdict(&s, YA, XA, TCP, 80), Deny);
    assert_eq!(
        verdict(&s, XB, XA, TCP, 80),
        Deny,
        "deny wins over the NetworkPolicy"
    );
    let e = explain(
        &s,
        &NodeContext::default(),
        &Flow {
            src: YC.parse().expect("ip"),
            dst: XA.parse().expect("ip"),
            protocol: TCP,
            port: 80,
        },
    );
    assert_eq!(e.policy_label().as_deref(), Some("f"));
}
