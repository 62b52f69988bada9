//! The report of a small chain: world → web → api → db (sensitive).

use super::*;
use crate::parse::parse_documents;

const CHAIN: &str = "
apiVersion: enforcer/v1
kind: Workload
metadata: {name: web-0}
spec: {service: web, addresses: [10.0.1.1]}
---
apiVersion: enforcer/v1
kind: Workload
metadata: {name: api-0}
spec: {service: api, addresses: [10.0.2.1]}
---
apiVersion: enforcer/v1
kind: Workload
metadata: {name: db-0, labels: {enforcer.dev/sensitive: 'true'}}
spec: {service: db, addresses: [10.0.3.1]}
---
apiVersion: enforcer/v1
kind: FlowPolicy
metadata: {name: base}
spec: {service: '*', ingress: []}
---
apiVersion: enforcer/v1
kind: FlowPolicy
metadata: {name: web}
spec: {service: web, ingress: [{from: [{cidr: 0.0.0.0/0}], ports: [{port: 443}]}]}
---
apiVersion: enforcer/v1
kind: FlowPolicy
metadata: {name: api}
spec: {service: api, ingress: [{from: [{service: web}], ports: [{port: 8080}]}]}
---
apiVersion: enforcer/v1
kind: FlowPolicy
metadata: {name: db}
spec: {service: db, ingress: [{from: [{service: api}], ports: [{port: 5432}]}], egress: []}
";

fn report() -> Report {
    let set =
        PolicySet::from_documents(parse_documents("t.yaml", CHAIN).expect("parses")).expect("set");
    build(&set)
}

#[test]
fn chain_exposure_and_blast_radius() {
    let r = report();
    let edge = |a: &str, b: &str| r.edges.iter().find(|e| e.from == a && e.to == b);
    let web_api = edge("web", "api").expect("web → api");
    assert_eq!(web_api.ports, vec!["TCP 8080"]);
    assert_eq!(web_api.rules, vec!["api ingress[0]"]);
    assert!(edge("world", "web").is_some() && edge("api", "db").is_some());
    assert!(edge("web", "db").is_none() && edge("world", "api").is_none());
    // db isolates its egress: nothing leaves it.
    assert!(edge("db", "web").is_none());
    let node = |n: &str| r.nodes.iter().find(|x| x.name == n).expect("node");
    let db = node("db");
    assert!(db.sensitive && !db.exposed);
    assert_eq!(db.reached_by, vec!["api"]);
    assert_eq!(db.reached_by_transitively, vec!["api", "web", "world"]);
    assert_eq!(node("web").blast_radius, vec!["api", "db"]);
    assert!(node("web").exposed);
}

#[test]
fn html_is_self_contained() {
    let page = html::render(&report()).expect("renders");
    assert!(!page.contains("/*DATA*/null"));
    for fetch in [
        "src=\"http",
        "href=\"http",
        "fetch(",
        "XMLHttpRequest",
        "@import",
    ] {
        assert!(!page.contains(fetch), "{fetch}");
    }
    let md = markdown::render(&report());
    assert!(md.contains("| db | **yes** |"));
}

#[test]
fn observed_edges() {
    let mut r = report();
    let seen = BTreeSet::from([
        ("web".to_string(), "api".to_string()),
        ("web".to_string(), "db".to_string()),
    ]);
    observe(&mut r, &seen);
    let web_api = r.edges.iter().find(|e| e.from == "web" && e.to == "api");
    assert_eq!(web_api.and_then(|e| e.observed), Some(true));
    assert_eq!(
        r.observed_not_allowed,
        vec![("web".to_string(), "db".to_string())]
    );
}

#[test]
fn a_sensitive_flow_policy_marks_the_services_it_selects() {
    // db marked by its FlowPolicy instead of a label: the same report.
    let chain = CHAIN
        .replace("labels: {enforcer.dev/sensitive: 'true'}", "labels: {}")
        .replace(
            "spec: {service: db, ingress:",
            "spec: {service: db, sensitive: true, ingress:",
        );
    let set =
        PolicySet::from_documents(parse_documents("t.yaml", &chain).expect("parses")).expect("set");
    let r = build(&set);
    let node = |n: &str| r.nodes.iter().find(|x| x.name == n).expect("node");
    assert!(node("db").sensitive, "db is marked by its FlowPolicy");
    assert!(!node("api").sensitive && !node("web").sensitive);
    // Without the mark, nothing is sensitive.
    let plain = chain.replace("sensitive: true,", "");
    let set =
        PolicySet::from_documents(parse_documents("t.yaml", &plain).expect("parses")).expect("set");
    assert!(build(&set).nodes.iter().all(|n| !n.sensitive));
}
