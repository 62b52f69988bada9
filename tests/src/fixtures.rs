//! Policy documents the end-to-end tests share: pods web-0 (10.10.1.10) and api-0 (10.10.2.10).

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
