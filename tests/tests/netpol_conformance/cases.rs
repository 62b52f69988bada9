//! The upstream cases, in the order of `network_policy.go`, each with the policies it creates
//! and the reachability it validates. Specs are written as kubectl prints them (block style,
//! `policyTypes` as the upstream helpers set them: `SetSpecIngressRules` adds Ingress,
//! `SetSpecEgressRules` adds Egress).

use super::{phase, Peer, Phase, Reachability};

const TCP: &str = "TCP";
const UDP: &str = "UDP";
const SCTP: &str = "SCTP";

fn all_true() -> Reachability {
    Reachability::new(true)
}

const DENY_INGRESS: &str = "podSelector: {}\npolicyTypes:\n- Ingress\n";
const POD_A: &str = "podSelector:\n  matchLabels:\n    pod: a\n";

/// A spec selecting pod=a with the given ingress rules (policyTypes Ingress).
fn a_ingress(rules: &str) -> String {
    format!("{POD_A}policyTypes:\n- Ingress\ningress:\n{rules}")
}

/// A spec selecting pod=a with the given egress rules (policyTypes Egress).
fn a_egress(rules: &str) -> String {
    format!("{POD_A}policyTypes:\n- Egress\negress:\n{rules}")
}

const FROM_NS_Y: &str = "- from:\n  - namespaceSelector:\n      matchLabels:\n        ns: y\n";

fn default_deny() -> Vec<Phase> {
    vec![
        phase(
            "should support a 'default-deny-ingress' policy",
            TCP,
            80,
            all_true().expect_peer(Peer::any(), Peer::ns("x"), false),
        )
        .policy("x", "deny-ingress", DENY_INGRESS),
        phase(
            "should support a 'default-deny-all' policy",
            TCP,
            80,
            all_true()
                .expect_peer(Peer::any(), Peer::ns("x"), false)
                .expect_peer(Peer::ns("x"), Peer::any(), false),
        )
        .policy(
            "x",
            "deny-all",
            "podSelector: {}\npolicyTypes:\n- Ingress\n- Egress\n",
        ),
        phase(
            "should support a 'default-deny-ingress' policy (UDP)",
            UDP,
            80,
            all_true().expect_peer(Peer::any(), Peer::ns("x"), false),
        )
        .policy("x", "deny-all", DENY_INGRESS),
        phase(
            "should support a 'default-deny-ingress' policy (SCTP)",
            SCTP,
            80,
            all_true().expect_peer(Peer::any(), Peer::ns("x"), false),
        )
        .policy("x", "deny-all", DENY_INGRESS),
        phase(
            "should deny egress from pods based on PodSelector",
            TCP,
            80,
            all_true().expect_all_egress("x/a", false),
        )
        .policy(
            "x",
            "deny-egress-pod-a",
            &format!("{POD_A}policyTypes:\n- Egress\n"),
        ),
        phase(
            "should deny egress from all pods in a namespace",
            TCP,
            80,
            all_true().expect_peer(Peer::ns("x"), Peer::any(), false),
        )
        .policy(
            "x",
            "deny-egress-ns-x",
            "podSelector: {}\npolicyTypes:\n- Egress\n",
        ),
        phase(
            "should deny ingress from pods on other namespaces",
            TCP,
            80,
            all_true()
                .expect_peer(Peer::ns("y"), Peer::ns("x"), false)
                .expect_peer(Peer::ns("z"), Peer::ns("x"), false),
        )
        .policy(
            "x",
            "deny-empty-policy",
            "podSelector: {}\npolicyTypes:\n- Ingress\ningress:\n- from:\n  - podSelector: {}\n",
        ),
    ]
}

fn selectors() -> Vec<Phase> {
    let only_y_to_xa = || {
        all_true()
            .expect_peer(Peer::ns("x"), Peer::pod("x", "a"), false)
            .expect_peer(Peer::ns("z"), Peer::pod("x", "a"), false)
    };
    vec![
        phase("should enforce policy to allow traffic from pods within server namespace based on PodSelector", TCP, 80,
            all_true().expect_all_ingress("x/a", false).expect("x/b", "x/a", true))
            .policy("x", "x-a-allows-x-b", &a_ingress("- from:\n  - podSelector:\n      matchLabels:\n        pod: b\n")),
        phase("should enforce policy to allow ingress traffic for a target", TCP, 80,
            all_true().expect_all_ingress("x/a", true).expect_all_ingress("x/b", false).expect_all_ingress("x/c", false))
            .policy("x", "deny-all", DENY_INGRESS)
            .policy("x", "allow-all-to-a", &a_ingress("- from:\n  - namespaceSelector: {}\n    podSelector: {}\n")),
        phase("should enforce policy to allow ingress traffic from pods in all namespaces", TCP, 80, all_true())
            .policy("x", "allow-from-another-ns", &a_ingress("- from:\n  - namespaceSelector: {}\n")),
        phase("should enforce policy to allow traffic only from a different namespace, based on NamespaceSelector", TCP, 80, only_y_to_xa())
            .policy("x", "allow-client-a-via-ns-selector", &a_ingress("- from:\n  - namespaceSelector:\n      matchLabels:\n        kubernetes.io/metadata.name: y\n")),
        phase("should enforce policy based on PodSelector with MatchExpressions", TCP, 80,
            all_true().expect_all_ingress("x/a", false).expect("x/b", "x/a", true))
            .policy("x", "x-a-allows-x-b", &a_ingress("- from:\n  - podSelector:\n      matchExpressions:\n      - key: pod\n        operator: In\n        values:\n        - b\n")),
        phase("should enforce policy based on NamespaceSelector with MatchExpressions", TCP, 80, only_y_to_xa())
            .policy("x", "allow-ns-y-match-selector", &a_ingress("- from:\n  - namespaceSelector:\n      matchExpressions:\n      - key: kubernetes.io/metadata.name\n        operator: In\n        values:\n        - y\n")),
    ]
}

fn combined_selectors() -> Vec<Phase> {
    vec![
        phase("should enforce policy based on PodSelector or NamespaceSelector", TCP, 80,
            all_true().expect("x/c", "x/a", false))
            .policy("x", "allow-ns-y-match-selector", &a_ingress("- from:\n  - namespaceSelector:\n      matchExpressions:\n      - key: kubernetes.io/metadata.name\n        operator: NotIn\n        values:\n        - x\n  - podSelector:\n      matchLabels:\n        pod: b\n")),
        phase("should enforce policy based on PodSelector and NamespaceSelector", TCP, 80,
            all_true().expect_all_ingress("x/a", false).expect("y/b", "x/a", true).expect("z/b", "x/a", true))
            .policy("x", "allow-ns-y-podselector-and-nsselector", &a_ingress("- from:\n  - namespaceSelector:\n      matchExpressions:\n      - key: kubernetes.io/metadata.name\n        operator: NotIn\n        values:\n        - x\n    podSelector:\n      matchLabels:\n        pod: b\n")),
        phase("should enforce policy based on Multiple PodSelectors and NamespaceSelectors", TCP, 80,
            all_true().expect_peer(Peer::ns("x"), Peer::pod("x", "a"), false).expect("y/a", "x/a", false).expect("z/a", "x/a", false))
            .policy("x", "allow-ns-y-z-pod-b-c", &a_ingress("- from:\n  - namespaceSelector:\n      matchExpressions:\n      - key: kubernetes.io/metadata.name\n        operator: NotIn\n        values:\n        - x\n    podSelector:\n      matchExpressions:\n      - key: pod\n        operator: In\n        values:\n        - b\n        - c\n")),
        phase("should enforce policy based on any PodSelectors", TCP, 80,
            all_true().expect_all_ingress("x/a", false).expect("x/b", "x/a", true).expect("x/c", "x/a", true))
            .policy("x", "allow-ns-x-pod-b-c", &a_ingress("- from:\n  - podSelector:\n      matchLabels:\n        pod: b\n  - podSelector:\n      matchLabels:\n        pod: c\n")),
        phase("should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector", TCP, 80,
            all_true().expect_all_ingress("x/a", false).expect("y/a", "x/a", true))
            .policy("x", "allow-ns-y-pod-a-via-namespace-pod-selector", &a_ingress("- from:\n  - namespaceSelector:\n      matchLabels:\n        ns: y\n    podSelector:\n      matchLabels:\n        pod: a\n")),
        phase("should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector (UDP)", UDP, 80,
            all_true().expect_all_ingress("x/a", false).expect("y/a", "x/a", true))
            .policy("x", "allow-ns-y-pod-a-via-namespace-pod-selector", &a_ingress("- from:\n  - namespaceSelector:\n      matchLabels:\n        ns: y\n    podSelector:\n      matchLabels:\n        pod: a\n")),
        phase("should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector (SCTP)", SCTP, 80,
            all_true().expect_all_ingress("x/a", false).expect("y/a", "x/a", true))
            .policy("x", "allow-ns-y-pod-a-via-namespace-pod-selector", &a_ingress("- from:\n  - namespaceSelector:\n      matchLabels:\n        ns: y\n    podSelector:\n      matchLabels:\n        pod: a\n")),
        phase("should enforce policy to allow traffic based on NamespaceSelector with MatchLabels using default ns label", TCP, 80,
            all_true().expect_peer(Peer::ns("x"), Peer::pod("x", "a"), false).expect_peer(Peer::ns("z"), Peer::pod("x", "a"), false))
            .policy("x", "allow-client-a-via-ns-selector-for-immutable-ns-label", &a_ingress("- from:\n  - namespaceSelector:\n      matchLabels:\n        kubernetes.io/metadata.name: y\n")),
        phase("should enforce policy based on NamespaceSelector with MatchExpressions using default ns label", TCP, 80,
            all_true().expect_peer(Peer::pod("x", "a"), Peer::ns("y"), false))
            .policy("x", "allow-ns-y-match-selector-for-immutable-ns-label", &a_egress("- to:\n  - namespaceSelector:\n      matchExpressions:\n      - key: kubernetes.io/metadata.name\n        operator: NotIn\n        values:\n        - y\n")),
    ]
}

fn ports() -> Vec<Phase> {
    let port81 = format!("{FROM_NS_Y}  ports:\n  - port: 81\n    protocol: TCP\n");
    let port80 = format!("{FROM_NS_Y}  ports:\n  - port: 80\n    protocol: TCP\n");
    let y_to_xa = || {
        all_true()
            .expect_peer(Peer::ns("x"), Peer::pod("x", "a"), false)
            .expect_peer(Peer::ns("y"), Peer::pod("x", "a"), true)
            .expect_peer(Peer::ns("z"), Peer::pod("x", "a"), false)
    };
    vec![
        phase("should enforce policy based on Ports", TCP, 81, y_to_xa()).policy(
            "x",
            "allow-client-a-via-ns-selector",
            &a_ingress(&port81),
        ),
        phase(
            "should enforce policy based on Ports (UDP)",
            UDP,
            81,
            y_to_xa(),
        )
        .policy(
            "x",
            "allow-ingress-on-port-81-ns-x",
            &a_ingress(&format!(
                "{FROM_NS_Y}  ports:\n  - port: 81\n    protocol: UDP\n"
            )),
        ),
        phase(
            "should enforce policy based on Ports (SCTP)",
            SCTP,
            81,
            y_to_xa(),
        )
        .policy(
            "x",
            "allow-ingress-on-port-81-ns-x",
            &a_ingress(&format!(
                "{FROM_NS_Y}  ports:\n  - port: 81\n    protocol: SCTP\n"
            )),
        ),
        phase(
            "should enforce multiple, stacked policies with overlapping podSelectors (81)",
            TCP,
            81,
            y_to_xa(),
        )
        .policy("x", "allow-client-a-via-ns-selector", &a_ingress(&port81)),
        phase(
            "should enforce multiple, stacked policies with overlapping podSelectors (80 denied)",
            TCP,
            80,
            all_true().expect_all_ingress("x/a", false),
        )
        .policy("x", "allow-client-a-via-ns-selector", &a_ingress(&port81)),
        phase(
            "should enforce multiple, stacked policies with overlapping podSelectors (80 added)",
            TCP,
            80,
            y_to_xa(),
        )
        .policy("x", "allow-client-a-via-ns-selector", &a_ingress(&port81))
        .policy(
            "x",
            "allow-client-a-via-ns-selector-80",
            &a_ingress(&port80),
        ),
    ]
}

fn named_ports() -> Vec<Phase> {
    let allow_all = "podSelector: {}\npolicyTypes:\n- Ingress\ningress:\n- {}\n";
    let named81 =
        "podSelector: {}\npolicyTypes:\n- Ingress\ningress:\n- ports:\n  - port: serve-81-tcp\n";
    let named80_from_y = a_ingress(&format!(
        "{FROM_NS_Y}  ports:\n  - port: serve-80-tcp\n    protocol: TCP\n"
    ));
    let egress80 =
        "podSelector: {}\npolicyTypes:\n- Egress\negress:\n- ports:\n  - port: serve-80-tcp\n";
    vec![
        phase("should support allow-all policy (80)", TCP, 80, all_true()).policy(
            "x",
            "allow-all",
            allow_all,
        ),
        phase("should support allow-all policy (81)", TCP, 81, all_true()).policy(
            "x",
            "allow-all",
            allow_all,
        ),
        phase(
            "should allow ingress access on one named port (81)",
            TCP,
            81,
            all_true(),
        )
        .policy("x", "allow-all", named81),
        phase(
            "should allow ingress access on one named port (80)",
            TCP,
            80,
            all_true().expect_peer(Peer::any(), Peer::ns("x"), false),
        )
        .policy("x", "allow-all", named81),
        phase(
            "should allow ingress access from namespace on one named port (80)",
            TCP,
            80,
            all_true()
                .expect_peer(Peer::ns("x"), Peer::pod("x", "a"), false)
                .expect_peer(Peer::ns("z"), Peer::pod("x", "a"), false),
        )
        .policy("x", "allow-client-a-via-ns-selector-80", &named80_from_y),
        phase(
            "should allow ingress access from namespace on one named port (81)",
            TCP,
            81,
            all_true().expect_all_ingress("x/a", false),
        )
        .policy("x", "allow-client-a-via-ns-selector-80", &named80_from_y),
        phase(
            "should allow egress access on one named port (80)",
            TCP,
            80,
            all_true(),
        )
        .policy("x", "allow-egress", egress80),
        phase(
            "should allow egress access on one named port (81)",
            TCP,
            81,
            all_true().expect_peer(Peer::ns("x"), Peer::any(), false),
        )
        .policy("x", "allow-egress", egress80),
    ]
}

fn protocols() -> Vec<Phase> {
    let by_proto = a_ingress("- ports:\n  - protocol: TCP\n");
    let sctp81 = a_ingress("- ports:\n  - port: 81\n    protocol: SCTP\n");
    vec![
        phase("should enforce ingress policy allowing any port traffic to a server on a specific protocol (TCP)", TCP, 80, all_true())
            .policy("x", "allow-ingress-by-proto", &by_proto),
        phase("should enforce ingress policy allowing any port traffic to a server on a specific protocol (UDP)", UDP, 80,
            all_true().expect_peer(Peer::any(), Peer::pod("x", "a"), false))
            .policy("x", "allow-ingress-by-proto", &by_proto),
        phase("should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP'", TCP, 81,
            all_true().expect_peer(Peer::any(), Peer::ns("x"), false))
            .policy("x", "deny-ingress", DENY_INGRESS)
            .policy("x", "allow-only-sctp-ingress-on-port-81", &sctp81),
        phase("should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP' (SCTP itself passes)", SCTP, 81,
            all_true().expect_peer(Peer::any(), Peer::ns("x"), false).expect_all_ingress("x/a", true))
            .policy("x", "deny-ingress", DENY_INGRESS)
            .policy("x", "allow-only-sctp-ingress-on-port-81", &sctp81),
        phase("should properly isolate pods that are selected by a policy allowing SCTP", TCP, 81,
            all_true().expect_all_ingress("x/a", false))
            .policy("x", "allow-only-sctp-ingress-on-port-80", &a_ingress("- ports:\n  - port: 80\n    protocol: SCTP\n")),
        phase("should not allow access by TCP when a policy specifies only UDP", TCP, 81,
            all_true().expect_all_ingress("x/a", false))
            .policy("x", "allow-only-udp-ingress-on-port-81", &a_ingress("- ports:\n  - port: 81\n    protocol: UDP\n")),
    ]
}

fn egress_and_both() -> Vec<Phase> {
    let both = "podSelector:\n  matchLabels:\n    pod: a\npolicyTypes:\n- Egress\n- Ingress\ningress:\n- from:\n  - podSelector:\n      matchLabels:\n        pod: b\negress:\n- ports:\n  - port: 80\n";
    let to_ya = "- to:\n  - namespaceSelector:\n      matchLabels:\n        ns: y\n    podSelector:\n      matchLabels:\n        pod: a\n";
    let from_xa = "- from:\n  - namespaceSelector:\n      matchLabels:\n        ns: x\n    podSelector:\n      matchLabels:\n        pod: a\n";
    let only_80_81 = |port| {
        phase("multiple ingress policies with ingress allow-all policy taking precedence (port 80 only)", TCP, port,
            all_true().expect_peer(Peer::any(), Peer::ns("x"), false))
            .policy("x", "allow-ingress-port-80", "podSelector: {}\npolicyTypes:\n- Ingress\ningress:\n- ports:\n  - port: 80\n")
    };
    vec![
        phase("should work with Ingress, Egress specified together (80)", TCP, 80,
            all_true().expect_all_ingress("x/a", false).expect("x/b", "x/a", true))
            .policy("x", "allow-client-a-via-pod-selector", both),
        phase("should work with Ingress, Egress specified together (81)", TCP, 81,
            all_true().expect_all_ingress("x/a", false).expect_all_egress("x/a", false).expect("x/b", "x/a", true))
            .policy("x", "allow-client-a-via-pod-selector", both),
        phase("should support denying of egress traffic on the client side (even if the server explicitly allows this traffic)", TCP, 80,
            all_true()
                .expect_peer(Peer::pod("x", "a"), Peer::any(), false)
                .expect_peer(Peer::any(), Peer::pod("y", "a"), false)
                .expect_peer(Peer::pod("x", "a"), Peer::pod("y", "a"), true)
                .expect_peer(Peer::any(), Peer::pod("y", "b"), false))
            .policy("x", "allow-to-ns-y-pod-a", &a_egress(to_ya))
            .policy("y", "allow-from-xa-on-ya-match-selector", &a_ingress(from_xa))
            .policy("y", "allow-from-xa-on-yb-match-selector", &format!("podSelector:\n  matchLabels:\n    pod: b\npolicyTypes:\n- Ingress\ningress:\n{from_xa}")),
        phase("should enforce egress policy allowing traffic to a server in a different namespace based on PodSelector and NamespaceSelector", TCP, 80,
            all_true().expect_all_egress("x/a", false).expect("x/a", "y/a", true))
            .policy("x", "allow-to-ns-y-pod-a", &a_egress(to_ya)),
        only_80_81(81),
        phase("multiple ingress policies with ingress allow-all policy taking precedence (allow-all added)", TCP, 81, all_true())
            .policy("x", "allow-ingress-port-80", "podSelector: {}\npolicyTypes:\n- Ingress\ningress:\n- ports:\n  - port: 80\n")
            .policy("x", "allow-ingress", "podSelector: {}\npolicyTypes:\n- Ingress\ningress:\n- {}\n"),
        phase("multiple egress policies with egress allow-all policy taking precedence (port 80 only)", TCP, 81,
            all_true().expect_peer(Peer::ns("x"), Peer::any(), false))
            .policy("x", "allow-egress-port-80", "podSelector: {}\npolicyTypes:\n- Egress\negress:\n- ports:\n  - port: 80\n"),
        phase("multiple egress policies with egress allow-all policy taking precedence (allow-all added)", TCP, 81, all_true())
            .policy("x", "allow-egress-port-80", "podSelector: {}\npolicyTypes:\n- Egress\negress:\n- ports:\n  - port: 80\n")
            .policy("x", "allow-egress", "podSelector: {}\npolicyTypes:\n- Egress\negress:\n- {}\n"),
        phase("ingress and egress policies can be controlled independently (egress allowed)", TCP, 80, all_true())
            .policy("x", "allow-egress-for-target", &a_egress("- {}\n")),
        phase("ingress and egress policies can be controlled independently (ingress denied)", TCP, 80,
            all_true().expect_all_ingress("x/a", false))
            .policy("x", "allow-egress-for-target", &a_egress("- {}\n"))
            .policy("x", "deny-ingress-via-label-selector", &format!("{POD_A}policyTypes:\n- Ingress\n")),
    ]
}

fn ip_blocks() -> Vec<Phase> {
    let except = a_egress(
        "- to:\n  - ipBlock:\n      cidr: 0.0.0.0/4\n      except:\n      - 10.10.21.2/32\n",
    );
    vec![
        phase("should allow egress access to server in CIDR block", TCP, 80,
            all_true().expect_all_egress("x/a", false).expect("x/a", "y/b", true))
            .policy("x", "allow-client-a-via-cidr-egress-rule", &a_egress("- to:\n  - ipBlock:\n      cidr: 10.10.22.2/32\n")),
        phase("should enforce except clause while egress access to server in CIDR block", TCP, 80,
            all_true().expect("x/a", "x/b", false))
            .policy("x", "allow-client-a-via-cidr-egress-rule", &except),
        phase("should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed (updated)", TCP, 80,
            all_true().expect_all_egress("x/a", false).expect("x/a", "x/b", true))
            .policy("x", "allow-client-a-via-cidr-egress-rule", &a_egress("- to:\n  - ipBlock:\n      cidr: 10.10.21.2/32\n")),
    ]
}

fn updates() -> Vec<Phase> {
    let ns2 =
        a_ingress("- from:\n  - namespaceSelector:\n      matchLabels:\n        ns2: updated\n");
    let pod2 = a_ingress(
        "- from:\n  - podSelector:\n      matchLabels:\n        pod: b\n        pod2: updated\n",
    );
    let isolated = "podSelector:\n  matchLabels:\n    target: isolated\npolicyTypes:\n- Ingress\n";
    vec![
        phase(
            "should enforce updated policy (allow all)",
            TCP,
            81,
            all_true(),
        )
        .policy(
            "x",
            "allow-all-mutate-to-deny-all",
            "podSelector: {}\npolicyTypes:\n- Ingress\ningress:\n- {}\n",
        ),
        phase(
            "should enforce updated policy (deny all)",
            TCP,
            81,
            all_true().expect_peer(Peer::any(), Peer::ns("x"), false),
        )
        .policy(
            "x",
            "allow-all-mutate-to-deny-all",
            "podSelector: {}\npolicyTypes:\n- Ingress\n",
        ),
        phase(
            "should allow ingress access from updated namespace (before)",
            TCP,
            80,
            all_true().expect_all_ingress("x/a", false),
        )
        .policy("x", "allow-client-a-via-ns-selector", &ns2),
        phase(
            "should allow ingress access from updated namespace (after)",
            TCP,
            80,
            all_true().expect_all_ingress("x/a", false).expect_peer(
                Peer::ns("y"),
                Peer::any(),
                true,
            ),
        )
        .policy("x", "allow-client-a-via-ns-selector", &ns2)
        .ns_label("y", "ns2", "updated"),
        phase(
            "should allow ingress access from updated pod (before)",
            TCP,
            80,
            all_true().expect_all_ingress("x/a", false),
        )
        .policy("x", "allow-client-a-via-pod-selector", &pod2),
        phase(
            "should allow ingress access from updated pod (after)",
            TCP,
            80,
            all_true()
                .expect_all_ingress("x/a", false)
                .expect("x/b", "x/a", true),
        )
        .policy("x", "allow-client-a-via-pod-selector", &pod2)
        .pod_label("x/b", "pod2", "updated"),
        phase(
            "should deny ingress access to updated pod (before)",
            TCP,
            80,
            all_true(),
        )
        .policy("x", "deny-ingress-via-label-selector", isolated),
        phase(
            "should deny ingress access to updated pod (after)",
            TCP,
            80,
            all_true().expect_all_ingress("x/a", false),
        )
        .policy("x", "deny-ingress-via-label-selector", isolated)
        .pod_label("x/a", "target", "isolated"),
        phase(
            "should stop enforcing policies after they are deleted (before)",
            TCP,
            80,
            all_true()
                .expect_peer(Peer::ns("x"), Peer::any(), false)
                .expect_peer(Peer::any(), Peer::ns("x"), false),
        )
        .policy(
            "x",
            "deny-all",
            "podSelector: {}\npolicyTypes:\n- Ingress\n- Egress\n",
        ),
        phase(
            "should stop enforcing policies after they are deleted (after)",
            TCP,
            80,
            all_true(),
        ),
    ]
}

pub fn all() -> Vec<Phase> {
    let mut v = default_deny();
    v.extend(selectors());
    v.extend(combined_selectors());
    v.extend(ports());
    v.extend(named_ports());
    v.extend(protocols());
    v.extend(egress_and_both());
    v.extend(ip_blocks());
    v.extend(updates());
    v
}
