//! Policy documents the end-to-end tests share: pods web-0 (10.10.1.10) and api-0 (10.10.2.10).

use std::fmt::Write as _;

/// Workloads web-0 (service web) and api-0 (service api).
pub const WEB_API_WORKLOADS: &str = r"
apiVersion: enforcer/v1
kind: Workload
metadata: {name: web-0}
spec: {service: web, addresses: [10.10.1.10]}
---
apiVersion: enforcer/v1
kind: Workload
metadata: {name: api-0}
spec: {service: api, addresses: [10.10.2.10]}
";

/// api admits web on TCP 8080 only.
pub const API_INGRESS_TCP_8080: &str = r"
apiVersion: enforcer/v1
kind: FlowPolicy
metadata: {name: api-ingress}
spec:
  service: api
  ingress:
    - from: [{service: web}]
      ports: [{protocol: TCP, port: 8080}]
";

/// A policy with an error on line 9 (port out of range).
pub const BAD_PORT_POLICY: &str = r"apiVersion: enforcer/v1
kind: FlowPolicy
metadata: {name: api-ingress}
spec:
  service: api
  ingress:
    - from: [{service: web}]
      ports:
        - {protocol: TCP, port: 70000}
";

/// 1 000 services with one workload each, 1 000 policies of 10 ingress rules (10 000 rules), and
/// the rule under test: api admits web on TCP 8080.
pub fn ten_thousand_rules() -> String {
    let mut y = String::new();
    let doc = |y: &mut String, body: &str| {
        y.push_str("---\napiVersion: enforcer/v1\n");
        y.push_str(body);
    };
    doc(
        &mut y,
        "kind: Workload\nmetadata: {name: web-0}\nspec: {service: web, addresses: [10.10.1.10]}\n",
    );
    doc(
        &mut y,
        "kind: Workload\nmetadata: {name: api-0}\nspec: {service: api, addresses: [10.10.2.10]}\n",
    );
    for i in 0..1000u32 {
        doc(&mut y, &format!("kind: Workload\nmetadata: {{name: svc-{i}-0}}\nspec: {{service: svc-{i}, addresses: [10.20.{}.{}]}}\n", i / 200, i % 200 + 1));
    }
    for i in 0..1000u32 {
        let mut body = format!("kind: FlowPolicy\nmetadata: {{name: svc-{i}-ingress}}\nspec:\n  service: svc-{i}\n  ingress:\n");
        for j in 0..10u32 {
            let peer = (i + j + 1) % 1000;
            let _ = writeln!(
                body,
                "    - from: [{{service: svc-{peer}}}]\n      ports: [{{protocol: TCP, port: {}}}]",
                1000 + j
            );
        }
        doc(&mut y, &body);
    }
    doc(&mut y, "kind: FlowPolicy\nmetadata: {name: api-ingress}\nspec:\n  service: api\n  ingress:\n    - from: [{service: web}]\n      ports: [{protocol: TCP, port: 8080}]\n");
    y
}
