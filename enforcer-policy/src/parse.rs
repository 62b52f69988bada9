//! Strict parser of the policy language (docs/design.md, "Policy language").
//!
//! Every rejection carries the file and the line and column of the offending node. All errors
//! that can be found are collected; a document with any error is not returned.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

use super::document::Document;
use super::errors::{PolicyErrors, Source};
use super::k8s;
use super::labels::{check_labels, check_name, LabelSelector, Labels};
use super::model::{
    FlowPolicy, Mode, ObjectKey, Peer, Rule, Section, Workload, ANY_SERVICE, API_VERSION,
    DEFAULT_NAMESPACE, KIND_FLOW_POLICY, KIND_WORKLOAD,
};
use super::named_port::NamedPort;
use super::node_de::{from_node, DeError};
use super::ports::PortSpec;
use super::rate_limit::RateLimit;
use super::schema;
use super::yaml::{self, Ctx, MapReader, Node, Pos, Value};

/// Parses a multi-document YAML text (`---` separated; empty documents are skipped).
///
/// `file` is only used in positions and errors. Duplicate names of the same kind within `text`
/// are errors.
pub fn parse_documents(file: &str, text: &str) -> Result<Vec<Document>, PolicyErrors> {
    let nodes = yaml::load(file, text)?;
    parse_document_nodes(file, &nodes)
}

/// Parses documents from already-loaded YAML nodes (e.g. the `apply:` list of a scenario step),
/// keeping the nodes' positions. `null` nodes are skipped.
pub fn parse_document_nodes(file: &str, nodes: &[Node]) -> Result<Vec<Document>, PolicyErrors> {
    let mut ctx = Ctx::new(file);
    let docs = read_documents(&mut ctx, nodes);
    ctx.finish(docs)
}

/// Reads documents into `ctx` (a `v1 List` gives its items), reporting duplicate names.
pub fn read_documents(ctx: &mut Ctx, nodes: &[Node]) -> Vec<Document> {
    let mut docs = Vec::new();
    let mut names: BTreeMap<(&'static str, ObjectKey), Pos> = BTreeMap::new();
    let mut items = Vec::new();
    for node in nodes.iter().filter(|n| !n.is_null()) {
        document_nodes(ctx, node, &mut items);
    }
    for node in items {
        let Some(doc) = read_document(ctx, node) else {
            continue;
        };
        let pos = node
            .get("metadata")
            .and_then(|m| m.get("name"))
            .map_or(node.pos, |n| n.pos);
        // Workloads and Pods share one name space.
        let space = if doc.kind() == k8s::KIND_POD {
            KIND_WORKLOAD
        } else {
            doc.kind()
        };
        let key = (space, doc.key());
        if let Some(first) = names.get(&key) {
            let reason = format!(
                "duplicate {} name {:?} (first defined at {}:{})",
                doc.kind(),
                doc.display_name(),
                ctx.file,
                first.line
            );
            ctx.error(pos, reason);
        } else {
            names.insert(key, pos);
            docs.push(doc);
        }
    }
    docs
}

/// The document nodes of `node`: itself, or the items of a `v1 List` (recursively).
fn document_nodes<'n>(ctx: &mut Ctx, node: &'n Node, out: &mut Vec<&'n Node>) {
    let is = |key: &str, want: &str| matches!(node.get(key).map(|n| &n.value), Some(Value::Str(s)) if s == want);
    if !(is("apiVersion", k8s::CORE_V1) && is("kind", k8s::KIND_LIST)) {
        out.push(node);
        return;
    }
    match node.get("items").map(|n| (&n.value, n.pos)) {
        None | Some((Value::Null, _)) => {}
        Some((Value::Seq(items), _)) => {
            for item in items.iter().filter(|n| !n.is_null()) {
                document_nodes(ctx, item, out);
            }
        }
        Some((other, pos)) => ctx.error(
            pos,
            format!("List: items must be a list, found {}", other.type_name()),
        ),
    }
}

const DOCUMENT_FIELDS: &[&str] = &["apiVersion", "kind", "metadata", "spec"];
const METADATA_FIELDS: &[&str] = &["name", "namespace", "labels", "annotations"];
const WORKLOAD_FIELDS: &[&str] = &["service", "addresses", "ports"];
pub const FLOW_POLICY_FIELDS: &[&str] = &[
    "service",
    "selector",
    "mode",
    "sensitive",
    "ingress",
    "egress",
    "ingressDeny",
    "egressDeny",
];
pub const PEER_FIELDS: &[&str] = &["service", "cidr", "except", "selector", "namespaceSelector"];
pub const PORT_FIELDS: &[&str] = &["protocol", "port", "endPort"];
pub const RATE_LIMIT_FIELDS: &[&str] = &["packetsPerSecond", "bytesPerSecond", "burst", "per"];

/// Reads one document (a mapping; not a `List`). Returns `None` if it has any error.
pub fn read_document(ctx: &mut Ctx, node: &Node) -> Option<Document> {
    let api_version = node.get("apiVersion").map(|n| &n.value);
    if let (Some(Value::Str(v)), Some(Value::Str(k))) =
        (api_version, node.get("kind").map(|n| &n.value))
    {
        if k8s::is_kubernetes(v, k) {
            return read_kubernetes(ctx, node, k);
        }
    }
    let errors_before = ctx.errors.len();
    let doc = ctx.map(node, None, "", DOCUMENT_FIELDS)?;
    if let Some(n) = doc.required(ctx, "apiVersion") {
        if let Some(version) = ctx.string(n, "apiVersion") {
            if version != API_VERSION {
                ctx.error(
                    n.pos,
                    format!("unsupported apiVersion {version:?} (expected {API_VERSION}, or v1 Namespace, Pod, List or networking.k8s.io/v1 NetworkPolicy)"),
                );
            }
        }
    }
    let kind = doc
        .required(ctx, "kind")
        .and_then(|n| Some((ctx.string(n, "kind")?, n.pos)));
    let meta = read_metadata(ctx, &doc);
    let source = Source {
        file: ctx.file.to_string(),
        line: node.pos.line,
    };
    let result = match kind {
        Some((kind, _)) if kind == KIND_WORKLOAD => {
            let spec = doc.map(ctx, "spec", true, WORKLOAD_FIELDS);
            spec.and_then(|spec| read_workload_spec(ctx, &spec, meta?, source))
                .map(Document::Workload)
        }
        Some((kind, _)) if kind == KIND_FLOW_POLICY => {
            let spec = doc.map(ctx, "spec", true, FLOW_POLICY_FIELDS);
            spec.and_then(|spec| read_flow_policy_spec(ctx, &spec, meta?, source))
                .map(Document::FlowPolicy)
        }
        Some((kind, pos)) => {
            ctx.error(
                pos,
                format!("unknown kind {kind:?} (expected {KIND_WORKLOAD} or {KIND_FLOW_POLICY})"),
            );
            None
        }
        None => None,
    };
    result.filter(|_| ctx.errors.len() == errors_before)
}

/// `metadata` of an enforcer/v1 document.
struct Metadata {
    name: String,
    namespace: Option<String>,
    labels: Labels,
}

fn read_metadata(ctx: &mut Ctx, doc: &MapReader) -> Option<Metadata> {
    let metadata = doc.map(ctx, "metadata", true, METADATA_FIELDS)?;
    let mut labels = Labels::new();
    for key in ["labels", "annotations"] {
        if let Some(n) = metadata.optional(key) {
            let map = ctx.string_map(n, &metadata.child(key));
            if key == "labels" {
                labels = map?.into_iter().collect();
                if let Err(reason) = check_labels(&labels) {
                    ctx.error(n.pos, format!("metadata.labels: {reason}"));
                    return None;
                }
            }
        }
    }
    let namespace = match metadata.optional("namespace") {
        None => None,
        Some(n) => Some(read_name(ctx, n, "metadata.namespace")?),
    };
    let node = metadata.required(ctx, "name")?;
    Some(Metadata {
        name: read_name(ctx, node, "metadata.name")?,
        namespace,
        labels,
    })
}

/// A name: 1 to 253 letters, digits, `-`, `_` or `.`.
pub fn read_name(ctx: &mut Ctx, node: &Node, what: &str) -> Option<String> {
    let name = ctx.non_empty_string(node, what)?;
    if let Err(reason) = check_name(&name) {
        ctx.error(node.pos, format!("invalid {what} {name:?}: {reason}"));
        return None;
    }
    Some(name)
}

fn read_service(ctx: &mut Ctx, node: &Node, what: &str, allow_any: bool) -> Option<String> {
    if allow_any && matches!(&node.value, Value::Str(s) if s == ANY_SERVICE) {
        return Some(ANY_SERVICE.to_string());
    }
    if matches!(&node.value, Value::Str(s) if s == ANY_SERVICE) {
        ctx.error(node.pos, format!("{what} must name one service, not \"*\""));
        return None;
    }
    read_name(ctx, node, what)
}

fn read_workload_spec(
    ctx: &mut Ctx,
    spec: &MapReader,
    meta: Metadata,
    source: Source,
) -> Option<Workload> {
    // A workload is named by its service, or by its labels.
    let service = if meta.labels.is_empty() || spec.optional("service").is_some() {
        let n = spec.required(ctx, "service");
        Some(n.and_then(|n| read_service(ctx, n, "spec.service", false)))
    } else {
        None
    };
    let addresses = read_addresses(ctx, spec, "addresses");
    let ports = read_named_ports(ctx, spec, "ports");
    // A label that `spec.service` also sets is refused by the set, which knows the configured
    // service labels ([`crate::PolicySet::with_service_labels`]).
    Some(Workload {
        name: meta.name,
        namespace: meta
            .namespace
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string()),
        labels: meta.labels,
        service: match service {
            Some(s) => Some(s?),
            None => None,
        },
        addresses: addresses?,
        ports: ports?,
        source,
    })
}

/// An optional list of named ports `[{name, containerPort, protocol}]` (names unique).
pub fn read_named_ports(ctx: &mut Ctx, map: &MapReader, key: &str) -> Option<Vec<NamedPort>> {
    let Some(node) = map.optional(key) else {
        return Some(Vec::new());
    };
    let path = map.child(key);
    let items = ctx.seq(node, &path)?;
    let mut ports: Vec<NamedPort> = Vec::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let what = format!("{path}[{i}]");
        if ctx
            .map(item, None, &what, &["name", "containerPort", "protocol"])
            .is_none()
        {
            ok = false;
            continue;
        }
        match from_node::<NamedPort>(item) {
            Ok(p) if ports.iter().any(|q| q.name == p.name) => {
                ctx.error(
                    item.pos,
                    format!("{what}: duplicate port name {:?}", p.name),
                );
                ok = false;
            }
            Ok(p) => ports.push(p),
            Err(e) => {
                report(ctx, item, &what, &e);
                ok = false;
            }
        }
    }
    ok.then_some(ports)
}

/// A required, non-empty list of distinct host IP addresses (no CIDRs).
pub fn read_addresses(ctx: &mut Ctx, map: &MapReader, key: &str) -> Option<Vec<IpAddr>> {
    let path = map.child(key);
    let node = map.required(ctx, key)?;
    let items = ctx.seq(node, &path)?;
    if items.is_empty() {
        ctx.error(
            node.pos,
            format!("{path} must list at least one IP address"),
        );
        return None;
    }
    let mut addresses: Vec<IpAddr> = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let what = format!("{path}[{i}]");
        match read_address(ctx, item, &what) {
            Some(addr) if addresses.contains(&addr) => {
                ctx.error(item.pos, format!("duplicate address {addr} in {path}"));
                ok = false;
            }
            Some(addr) => addresses.push(addr),
            None => ok = false,
        }
    }
    ok.then_some(addresses)
}

/// One host IP address.
pub fn read_address(ctx: &mut Ctx, node: &Node, what: &str) -> Option<IpAddr> {
    let text = ctx.string(node, what)?;
    let text = text.trim();
    if text.contains('/') {
        ctx.error(
            node.pos,
            format!("{what} {text:?} must be a single IP address, not a CIDR"),
        );
        return None;
    }
    let Ok(addr) = IpAddr::from_str(text) else {
        ctx.error(
            node.pos,
            format!("{what} {text:?} is not a valid IP address"),
        );
        return None;
    };
    let reason = match addr {
        _ if addr.is_unspecified() => Some("the unspecified address"),
        _ if addr.is_multicast() => Some("a multicast address"),
        IpAddr::V4(v4) if v4.is_broadcast() => Some("the broadcast address"),
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => {
            Some("an IPv4-mapped IPv6 address (write the IPv4 address)")
        }
        _ => None,
    };
    if let Some(reason) = reason {
        ctx.error(
            node.pos,
            format!("{what} {addr} is {reason}, not a host address"),
        );
        return None;
    }
    Some(addr)
}

fn read_flow_policy_spec(
    ctx: &mut Ctx,
    spec: &MapReader,
    meta: Metadata,
    source: Source,
) -> Option<FlowPolicy> {
    let errors_before = ctx.errors.len();
    let selector = spec
        .optional("selector")
        .and_then(|n| read_selector(ctx, n, "spec.selector"));
    let service = if selector.is_some() && spec.optional("service").is_none() {
        Some(ANY_SERVICE.to_string())
    } else {
        spec.required(ctx, "service")
            .and_then(|n| read_service(ctx, n, "spec.service", true))
    };
    let mode = match spec.optional("mode") {
        None => Some(Mode::Enforce),
        Some(n) => ctx
            .string(n, "spec.mode")
            .and_then(|s| match Mode::from_str(&s) {
                Ok(mode) => Some(mode),
                Err(reason) => {
                    ctx.error(n.pos, format!("spec.mode: {reason}"));
                    None
                }
            }),
    };
    let sensitive = match spec.optional("sensitive").map(|n| (&n.value, n.pos)) {
        None => Some(false),
        Some((Value::Bool(b), _)) => Some(*b),
        Some((other, pos)) => {
            let found = other.type_name();
            ctx.error(
                pos,
                format!("spec.sensitive must be true or false, found {found}"),
            );
            None
        }
    };
    let mut sections: [Option<Vec<Rule>>; 4] = Default::default();
    for (i, section) in [
        Section::Ingress,
        Section::Egress,
        Section::IngressDeny,
        Section::EgressDeny,
    ]
    .into_iter()
    .enumerate()
    {
        let Some((_, node)) = spec.entry(section.key()) else {
            continue;
        };
        let path = spec.child(section.key());
        let Some(items) = ctx.seq(node, &path) else {
            continue;
        };
        let rules = items
            .iter()
            .enumerate()
            .filter_map(|(j, item)| read_rule(ctx, item, Some(section), &format!("{path}[{j}]")))
            .collect();
        sections[i] = Some(rules);
    }
    if ctx.errors.len() != errors_before {
        return None;
    }
    let [ingress, egress, ingress_deny, egress_deny] = sections;
    Some(FlowPolicy {
        name: meta.name,
        namespace: meta.namespace,
        service: service?,
        selector,
        mode: mode?,
        sensitive: sensitive?,
        ingress,
        egress,
        ingress_deny: ingress_deny.unwrap_or_default(),
        egress_deny: egress_deny.unwrap_or_default(),
        source,
    })
}

/// Reads a rule of `section`; with `None` (a rule on its own) the peers may be under `peers`,
/// `from` or `to`.
pub fn read_rule(ctx: &mut Ctx, node: &Node, section: Option<Section>, path: &str) -> Option<Rule> {
    let errors_before = ctx.errors.len();
    let rule = ctx.map(
        node,
        None,
        path,
        &["peers", "from", "to", "ports", "rateLimit"],
    )?;
    // Keys that the generic check accepted but this section does not are reported; their peers
    // are still read, to report their errors too.
    let peer_keys = ["from", "to", "peers"];
    if let Some(section) = section {
        for wrong in ["from", "to", "peers"] {
            if wrong == section.peer_key() {
                continue;
            }
            if let Some((key, _)) = rule.entry(wrong) {
                let with_limit = [section.peer_key(), "ports", "rateLimit"];
                let allowed: &[&str] = if section == Section::Ingress {
                    &with_limit
                } else {
                    &with_limit[..2]
                };
                let reason = format!(
                    "{}; {} rules list their peers under `{}`",
                    yaml::unknown_field(wrong, path, allowed),
                    section.key(),
                    section.peer_key()
                );
                ctx.error(key.pos, reason);
            }
        }
        if section != Section::Ingress {
            if let Some((key, _)) = rule.entry("rateLimit") {
                ctx.error(
                    key.pos,
                    format!(
                        "rateLimit is only allowed on ingress rules, not in {} ({path})",
                        section.key()
                    ),
                );
            }
        }
    } else {
        let present: Vec<&str> = peer_keys
            .iter()
            .copied()
            .filter(|k| rule.entry(k).is_some())
            .collect();
        if present.len() > 1 {
            ctx.error(
                node.pos,
                format!("{path}: use only one of {}", present.join(", ")),
            );
        }
    }
    let mut peers = Vec::new();
    for key in peer_keys {
        let Some(n) = rule.optional(key) else {
            continue;
        };
        let peer_path = rule.child(key);
        let Some(items) = ctx.seq(n, &peer_path) else {
            continue;
        };
        for (i, item) in items.iter().enumerate() {
            if let Some(peer) = read_peer(ctx, item, &format!("{peer_path}[{i}]")) {
                peers.push(peer);
            }
        }
    }
    let mut ports = Vec::new();
    if let Some(n) = rule.optional("ports") {
        let ports_path = rule.child("ports");
        if let Some(items) = ctx.seq(n, &ports_path) {
            for (i, item) in items.iter().enumerate() {
                if let Some(port) = read_port(ctx, item, &format!("{ports_path}[{i}]")) {
                    ports.push(port);
                }
            }
        }
    }
    let rate_limit = match (section, rule.optional("rateLimit")) {
        (None | Some(Section::Ingress), Some(n)) => {
            let anchor = rule.entry("rateLimit").map(|(k, _)| k.pos);
            read_rate_limit(ctx, n, anchor, &rule.child("rateLimit"))
        }
        _ => None,
    };
    (ctx.errors.len() == errors_before).then_some(Rule {
        peers,
        ports,
        rate_limit,
        line: node.pos.line,
    })
}

/// Reads a peer: `{service: NAME}` (`"*"` = any workload) or `{cidr: C, except: [..]}`.
pub fn read_peer(ctx: &mut Ctx, node: &Node, path: &str) -> Option<Peer> {
    let peer = ctx.map(node, None, path, PEER_FIELDS)?;
    let service = peer.entry("service");
    let cidr = peer.entry("cidr");
    let pods = peer.entry("selector");
    let namespaces = peer.entry("namespaceSelector");
    if pods.is_some() || namespaces.is_some() {
        if let Some((key, _)) = service.or(cidr).or(peer.entry("except")) {
            ctx.error(
                key.pos,
                format!("{path}: a peer with `selector` or `namespaceSelector` has no `service`, `cidr` or `except`"),
            );
            return None;
        }
        let errors_before = ctx.errors.len();
        let read = |ctx: &mut Ctx, entry: Option<(&yaml::Key, &Node)>, key: &str| {
            entry.and_then(|(_, n)| read_selector(ctx, n, &peer.child(key)))
        };
        let pods = read(ctx, pods, "selector");
        let namespaces = read(ctx, namespaces, "namespaceSelector");
        return (ctx.errors.len() == errors_before).then_some(Peer::Selector { pods, namespaces });
    }
    match (service, cidr) {
        (Some(_), Some((key, _))) => {
            ctx.error(
                key.pos,
                format!("{path}: a peer has either `service` or `cidr`, not both"),
            );
            None
        }
        (None, None) => {
            ctx.error(
                node.pos,
                format!(
                    "{path}: a peer needs `service` or `cidr` (or `selector`/`namespaceSelector`)"
                ),
            );
            None
        }
        (Some(_), None) => {
            if let Some((key, _)) = peer.entry("except") {
                ctx.error(
                    key.pos,
                    format!("{path}: `except` is only allowed with `cidr`"),
                );
                return None;
            }
            let n = peer.required(ctx, "service")?;
            read_service(ctx, n, &peer.child("service"), true).map(Peer::Service)
        }
        (None, Some(_)) => {
            let n = peer.required(ctx, "cidr")?;
            let cidr = read_cidr(ctx, n, &peer.child("cidr"));
            let mut except = Vec::new();
            let mut ok = true;
            if let Some(n) = peer.optional("except") {
                let except_path = peer.child("except");
                let items = ctx.seq(n, &except_path)?;
                for (i, item) in items.iter().enumerate() {
                    let what = format!("{except_path}[{i}]");
                    let Some(e) = read_cidr(ctx, item, &what) else {
                        ok = false;
                        continue;
                    };
                    if let Some(cidr) = cidr {
                        if !same_family(&cidr, &e) {
                            ctx.error(
                                item.pos,
                                format!(
                                    "{what} {e} is not of the same address family as cidr {cidr}"
                                ),
                            );
                            ok = false;
                        } else if !cidr.contains(&e) {
                            ctx.error(item.pos, format!("{what} {e} is not inside cidr {cidr}"));
                            ok = false;
                        }
                    }
                    except.push(e);
                }
            }
            let cidr = cidr?;
            ok.then_some(Peer::Cidr { cidr, except })
        }
    }
}

/// A label selector `{matchLabels, matchExpressions}` (`null` or `{}`: everything).
pub fn read_selector(ctx: &mut Ctx, node: &Node, path: &str) -> Option<LabelSelector> {
    if node.is_null() {
        return Some(LabelSelector::default());
    }
    ctx.map(node, None, path, &["matchLabels", "matchExpressions"])?;
    match from_node::<LabelSelector>(node) {
        Ok(s) => Some(s),
        Err(e) => {
            report(ctx, node, path, &e);
            None
        }
    }
}

fn same_family(a: &IpNet, b: &IpNet) -> bool {
    matches!(
        (a, b),
        (IpNet::V4(_), IpNet::V4(_)) | (IpNet::V6(_), IpNet::V6(_))
    )
}

/// A CIDR `ADDRESS/PREFIX` with no host bits set.
pub fn read_cidr(ctx: &mut Ctx, node: &Node, what: &str) -> Option<IpNet> {
    let text = ctx.string(node, what)?;
    match parse_cidr(text.trim()) {
        Ok(net) => Some(net),
        Err(reason) => {
            ctx.error(
                node.pos,
                format!("invalid CIDR {text:?} in {what}: {reason}"),
            );
            None
        }
    }
}

/// Parses a CIDR, rejecting a missing prefix length and host bits.
pub fn parse_cidr(text: &str) -> Result<IpNet, String> {
    let Some((addr, prefix)) = text.split_once('/') else {
        return Err("missing prefix length (e.g. 10.0.0.0/24)".to_string());
    };
    let addr = IpAddr::from_str(addr).map_err(|_| format!("{addr:?} is not an IP address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix: u8 = match prefix.parse() {
        Ok(p) if p <= max => p,
        _ => {
            return Err(format!(
                "prefix length {prefix:?} must be a number from 0 to {max}"
            ))
        }
    };
    let net = IpNet::new(addr, prefix).map_err(|e| e.to_string())?;
    if net.trunc() != net {
        return Err(format!("host bits set (did you mean {}?)", net.trunc()));
    }
    // IPv4-mapped IPv6 space is how the datapath stores IPv4 addresses: a CIDR inside it would
    // be ambiguous. Write the IPv4 CIDR instead.
    if let IpNet::V6(v6) = net {
        if prefix >= 96 && v6.network().to_ipv4_mapped().is_some() {
            return Err(format!(
                "{net} is IPv4-mapped IPv6 space; write the IPv4 CIDR instead"
            ));
        }
    }
    Ok(net)
}

/// Reads a port entry: `{protocol, port, endPort}` ([`schema::PortEntry`]).
pub fn read_port(ctx: &mut Ctx, node: &Node, path: &str) -> Option<PortSpec> {
    schema::read::<schema::PortEntry>(ctx, node, path, None)?.validate(ctx, path)
}

/// Reads `rateLimit: {packetsPerSecond, bytesPerSecond, burst, per}`
/// ([`schema::RateLimitEntry`]); `anchor` is the `rateLimit` key.
pub fn read_rate_limit(
    ctx: &mut Ctx,
    node: &Node,
    anchor: Option<Pos>,
    path: &str,
) -> Option<RateLimit> {
    let entry: schema::RateLimitEntry = schema::read(ctx, node, path, anchor)?;
    entry.validate(ctx, path, anchor.unwrap_or(node.pos))
}

/// Records a deserialization error at its node (or at `fallback`).
fn report(ctx: &mut Ctx, fallback: &Node, what: &str, e: &DeError) {
    let pos = e.pos.unwrap_or(fallback.pos);
    ctx.error(pos, format!("{what}: {}", e.message));
}

/// Reads one Kubernetes object (not a `List`: see [`read_documents`]).
fn read_kubernetes(ctx: &mut Ctx, node: &Node, kind: &str) -> Option<Document> {
    let source = Source {
        file: ctx.file.to_string(),
        line: node.pos.line,
    };
    let result = match kind {
        k8s::KIND_NAMESPACE => {
            from_node(node).map(|n| Document::Namespace(k8s::Namespace::from_raw(n, source)))
        }
        k8s::KIND_POD => from_node(node).map(|p| Document::Pod(k8s::Pod::from_raw(p, source))),
        k8s::KIND_NETWORK_POLICY => from_node(node)
            .map(|p| Document::NetworkPolicy(k8s::NetworkPolicy::from_raw(p, source))),
        _ => {
            ctx.error(node.pos, format!("{kind} is not a single document"));
            return None;
        }
    };
    match result {
        Ok(doc) => Some(doc),
        Err(e) => {
            report(ctx, node, kind, &e);
            None
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::Protocol;
    use crate::rate_limit::RateScope;
    use crate::set::{ApplyOutcome, PolicySet};

    const EXAMPLE: &str = r#"apiVersion: enforcer/v1
kind: Workload                 # one pod: its addresses and its service identity
metadata: {name: web-0}
spec:
  service: web
  addresses: [10.10.1.10, "fd00:10::10"]
---
apiVersion: enforcer/v1
kind: FlowPolicy
metadata: {name: api-ingress}
spec:
  service: api                 # the service it protects; "*" = every service
  mode: enforce                # or audit
  ingress:                     # key present (even []) => api is isolated for ingress
    - from: [{service: web}, {cidr: 192.0.2.0/24, except: [192.0.2.128/25]}]
      ports: [{protocol: TCP, port: 8080}, {protocol: TCP, port: 9000, endPort: 9010}]
      rateLimit: {packetsPerSecond: 100, burst: 20, per: source}   # per: source (default) | rule
  egress:
    - to: [{service: db}]
      ports: [{protocol: TCP, port: 5432}]
  ingressDeny:
    - from: [{service: batch}]
  egressDeny: []
"#;

    fn parse(text: &str) -> Result<Vec<Document>, PolicyErrors> {
        parse_documents("test.yaml", text)
    }

    /// Asserts that `text` is rejected with an error at `line` whose reason contains `needle`.
    #[track_caller]
    fn rejects(text: &str, line: usize, needle: &str) {
        let errors = match parse(text) {
            Ok(docs) => panic!("accepted: {docs:?}\n{text}"),
            Err(errors) => errors,
        };
        assert!(
            errors
                .iter()
                .any(|e| e.line == line && e.file == "test.yaml" && e.reason.contains(needle)),
            "expected an error at line {line} containing {needle:?}, got:\n{errors}"
        );
    }

    fn policy(spec: &str) -> String {
        format!("apiVersion: enforcer/v1\nkind: FlowPolicy\nmetadata:\n  name: p\nspec:\n{spec}")
    }

    fn workload(spec: &str) -> String {
        format!("apiVersion: enforcer/v1\nkind: Workload\nmetadata:\n  name: w\nspec:\n{spec}")
    }

    fn only_policy(text: &str) -> FlowPolicy {
        match parse(text).expect("valid").pop() {
            Some(Document::FlowPolicy(p)) => p,
            other => panic!("expected a FlowPolicy, got {other:?}"),
        }
    }

    #[test]
    fn design_example_parses() {
        let docs = parse(EXAMPLE).expect("valid");
        assert_eq!(docs.len(), 2);
        let Document::Workload(w) = &docs[0] else {
            panic!("workload")
        };
        assert_eq!(w.name, "web-0");
        assert_eq!(w.service.as_deref(), Some("web"));
        assert_eq!(
            w.addresses,
            vec![
                "10.10.1.10".parse::<IpAddr>().unwrap(),
                "fd00:10::10".parse().unwrap()
            ]
        );
        assert_eq!(
            w.source,
            Source {
                file: "test.yaml".into(),
                line: 1
            }
        );
        let Document::FlowPolicy(p) = &docs[1] else {
            panic!("policy")
        };
        assert_eq!(p.name, "api-ingress");
        assert_eq!(p.service, "api");
        assert_eq!(p.mode, Mode::Enforce);
        assert_eq!(p.source.line, 8);
        let ingress = p.ingress.as_ref().expect("ingress");
        assert_eq!(ingress.len(), 1);
        let rule = &ingress[0];
        assert_eq!(rule.line, 15);
        assert_eq!(
            rule.peers,
            vec![
                Peer::Service("web".into()),
                Peer::Cidr {
                    cidr: "192.0.2.0/24".parse().unwrap(),
                    except: vec!["192.0.2.128/25".parse().unwrap()]
                }
            ]
        );
        assert_eq!(
            rule.ports,
            vec![
                PortSpec {
                    name: None,
                    protocol: Protocol::Tcp,
                    port: Some(8080),
                    end_port: None
                },
                PortSpec {
                    name: None,
                    protocol: Protocol::Tcp,
                    port: Some(9000),
                    end_port: Some(9010)
                },
            ]
        );
        assert_eq!(rule.ports[1].range(), (9000, 9010));
        assert_eq!(
            rule.rate_limit,
            Some(RateLimit {
                packets_per_second: Some(100),
                bytes_per_second: None,
                burst: Some(20),
                per: RateScope::Source
            })
        );
        let egress = p.egress.as_ref().expect("egress");
        assert_eq!(egress[0].peers, vec![Peer::Service("db".into())]);
        assert_eq!(p.ingress_deny.len(), 1);
        assert_eq!(p.ingress_deny[0].peers, vec![Peer::Service("batch".into())]);
        assert!(p.ingress_deny[0].ports.is_empty());
        assert!(p.egress_deny.is_empty());
    }

    #[test]
    fn design_example_round_trips_yaml_and_json() {
        let docs = parse(EXAMPLE).expect("valid");
        let yaml = Document::to_yaml_stream(&docs).expect("serialize");
        assert!(yaml.contains("apiVersion: enforcer/v1"), "{yaml}");
        assert!(yaml.contains("ingressDeny"), "{yaml}");
        assert!(yaml.contains("packetsPerSecond: 100"), "{yaml}");
        assert!(yaml.contains("endPort: 9010"), "{yaml}");
        let again = parse(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        assert_eq!(docs.len(), again.len());
        for (a, b) in docs.iter().zip(&again) {
            assert!(a.same_content(b), "{a:?}\n{b:?}");
        }
        for doc in &docs {
            let json = serde_json::to_string(doc).expect("json");
            let back: Document = serde_json::from_str(&json).expect("parse json");
            assert!(doc.same_content(&back), "{json}");
            let yaml = serde_yaml_ng::to_string(doc).expect("yaml");
            let back: Document = serde_yaml_ng::from_str(&yaml).expect("parse yaml");
            assert!(doc.same_content(&back), "{yaml}");
        }
        let json = serde_json::to_value(&docs[1]).expect("json");
        assert_eq!(json["kind"], "FlowPolicy");
        assert_eq!(json["metadata"]["name"], "api-ingress");
        assert_eq!(json["spec"]["ingress"][0]["from"][0]["service"], "web");
        assert_eq!(
            json["spec"]["ingress"][0]["from"][1]["cidr"],
            "192.0.2.0/24"
        );
        assert_eq!(json["spec"]["egress"][0]["to"][0]["service"], "db");
        assert_eq!(json["spec"]["ingress"][0]["rateLimit"]["per"], "source");
    }

    #[test]
    fn ingress_presence_round_trips() {
        let empty = only_policy(&policy("  service: api\n  ingress: []\n"));
        assert_eq!(empty.ingress, Some(vec![]));
        assert_eq!(empty.egress, None);
        let null = only_policy(&policy("  service: api\n  egress:\n"));
        assert_eq!(null.egress, Some(vec![]));
        for p in [empty, null] {
            let yaml = serde_yaml_ng::to_string(&p).expect("yaml");
            let back = only_policy(&yaml);
            assert_eq!(back.ingress, p.ingress, "{yaml}");
            assert_eq!(back.egress, p.egress, "{yaml}");
            let json = serde_json::to_string(&p).expect("json");
            let back: FlowPolicy = serde_json::from_str(&json).expect("json back");
            assert_eq!(back.ingress, p.ingress, "{json}");
            assert_eq!(back.egress, p.egress, "{json}");
        }
    }

    #[test]
    fn defaults() {
        let p = only_policy(&policy(
            "  service: \"*\"\n  ingress:\n    - {}\n    - ports: [{port: 53}, {protocol: icmp}, {protocol: udp}]\n",
        ));
        assert_eq!(p.service, "*");
        assert_eq!(p.mode, Mode::Enforce);
        let rules = p.ingress.expect("ingress");
        assert_eq!(
            rules[0],
            Rule {
                line: 8,
                ..Rule::default()
            }
        );
        assert_eq!(
            rules[1].ports[0],
            PortSpec {
                name: None,
                protocol: Protocol::Tcp,
                port: Some(53),
                end_port: None
            }
        );
        assert_eq!(rules[1].ports[1].protocol, Protocol::Icmp);
        assert_eq!(rules[1].ports[2].range(), (0, 65535));
        let p = only_policy(&policy(
            "  service: api\n  mode: audit\n  ingress:\n    - rateLimit: {bytesPerSecond: 1000, per: rule}\n",
        ));
        assert_eq!(p.mode, Mode::Audit);
        let limit = p.ingress.expect("ingress")[0].rate_limit.expect("limit");
        assert_eq!(limit.per, RateScope::Rule);
        assert_eq!(limit.bytes_per_second, Some(1000));
        assert_eq!(limit.packets_per_second, None);
    }

    #[test]
    fn empty_documents_are_skipped() {
        assert_eq!(parse("").expect("empty"), vec![]);
        assert_eq!(parse("# nothing\n---\n---\n").expect("empty"), vec![]);
        let docs = parse(&format!("---\n{}\n---\n# x\n", policy("  service: api\n"))).expect("ok");
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].source().line, 2);
    }

    #[test]
    fn rejects_yaml_syntax_errors() {
        rejects(
            "apiVersion: enforcer/v1\nkind: [Workload\n",
            2,
            "invalid YAML: unclosed bracket '['",
        );
        rejects("apiVersion: enforcer/v1\n  kind: x\n", 2, "invalid YAML");
    }

    #[test]
    fn rejects_bad_document_heads() {
        rejects(
            "kind: Workload\nmetadata: {name: w}\nspec: {service: a, addresses: [10.0.0.1]}\n",
            1,
            "apiVersion",
        );
        rejects(
            "apiVersion: enforcer/v2\nkind: Workload\nmetadata: {name: w}\nspec: {service: a, addresses: [10.0.0.1]}\n",
            1,
            "unsupported apiVersion",
        );
        rejects(
            "apiVersion: enforcer/v1\nkind: NetworkPolicy\nmetadata: {name: w}\nspec: {}\n",
            2,
            "unknown kind",
        );
        rejects(
            "apiVersion: enforcer/v1\nmetadata: {name: w}\nspec: {}\n",
            1,
            "missing required field `kind`",
        );
        rejects("- 1\n- 2\n", 1, "must be a mapping");
        rejects("just a string\n", 1, "must be a mapping");
        rejects(
            &format!(
                "{}status: {{}}\n",
                workload("  service: a\n  addresses: [10.0.0.1]\n")
            ),
            8,
            "unknown field `status`",
        );
    }

    #[test]
    fn rejects_bad_metadata() {
        let spec = "spec:\n  service: a\n  addresses: [10.0.0.1]\n";
        rejects(
            &format!("apiVersion: enforcer/v1\nkind: Workload\n{spec}"),
            1,
            "missing required field `metadata`",
        );
        rejects(
            &format!(
                "apiVersion: enforcer/v1\nkind: Workload\nmetadata:\n  labels: {{a: b}}\n{spec}"
            ),
            3,
            "missing required field `name`",
        );
        rejects(
            &format!(
                "apiVersion: enforcer/v1\nkind: Workload\nmetadata:\n  name: w\n  uid: x\n{spec}"
            ),
            5,
            "unknown field `uid`",
        );
        rejects(&format!("apiVersion: enforcer/v1\nkind: Workload\nmetadata:\n  name: w\n  namespace: 'x y'\n{spec}"), 5, "invalid metadata.namespace");
        rejects(
            &format!("apiVersion: enforcer/v1\nkind: Workload\nmetadata:\n  name: 'a b'\n{spec}"),
            4,
            "invalid metadata.name",
        );
        rejects(
            &format!("apiVersion: enforcer/v1\nkind: Workload\nmetadata:\n  name: ''\n{spec}"),
            4,
            "must not be empty",
        );
        rejects(
            &format!("apiVersion: enforcer/v1\nkind: Workload\nmetadata:\n  name: [w]\n{spec}"),
            4,
            "must be a string",
        );
        rejects(&format!("apiVersion: enforcer/v1\nkind: Workload\nmetadata:\n  name: w\n  labels: {{a: [b]}}\n{spec}"), 5, "labels.a must be a string");
        // labels and annotations are accepted
        parse(&format!("apiVersion: enforcer/v1\nkind: Workload\nmetadata:\n  name: w\n  labels: {{a: b}}\n  annotations: {{x: 'y'}}\n{spec}")).expect("valid");
    }

    #[test]
    fn rejects_bad_workloads() {
        rejects(
            &workload("  addresses: [10.0.0.1]\n"),
            5,
            "missing required field `service`",
        );
        rejects(
            &workload("  service: a\n"),
            5,
            "missing required field `addresses`",
        );
        rejects(
            &workload("  service: a\n  addresses: []\n"),
            7,
            "at least one",
        );
        rejects(
            &workload("  service: '*'\n  addresses: [10.0.0.1]\n"),
            6,
            "not \"*\"",
        );
        rejects(
            &workload("  service: 42\n  addresses: [10.0.0.1]\n"),
            6,
            "must be a string",
        );
        rejects(
            &workload("  service: a\n  addresses: [10.0.0.0/24]\n"),
            7,
            "not a CIDR",
        );
        rejects(
            &workload("  service: a\n  addresses: [10.0.0.300]\n"),
            7,
            "not a valid IP address",
        );
        rejects(
            &workload("  service: a\n  addresses: 10.0.0.1\n"),
            7,
            "must be a list",
        );
        rejects(
            &workload("  service: a\n  addresses:\n    - 10.0.0.1\n    - 10.0.0.1\n"),
            9,
            "duplicate address",
        );
        rejects(
            &workload("  service: a\n  addresses: [0.0.0.0]\n"),
            7,
            "unspecified",
        );
        rejects(
            &workload("  service: a\n  node: n1\n  addresses: [10.0.0.1]\n"),
            7,
            "unknown field `node`",
        );
        rejects(
            "apiVersion: enforcer/v1\nkind: Workload\nmetadata: {name: w}\n",
            1,
            "missing required field `spec`",
        );
        rejects(
            "apiVersion: enforcer/v1\nkind: Workload\nmetadata: {name: w}\nspec: [1]\n",
            4,
            "spec must be a mapping",
        );
    }

    #[test]
    fn rejects_unknown_fields_everywhere() {
        rejects(
            &policy("  service: api\n  ingres: []\n"),
            7,
            "unknown field `ingres`",
        );
        rejects(
            &policy("  service: api\n  ingress:\n    - fromm: []\n"),
            8,
            "unknown field `fromm`",
        );
        rejects(
            &policy("  service: api\n  ingress:\n    - from: [{service: a, namespace: b}]\n"),
            8,
            "unknown field `namespace`",
        );
        rejects(
            &policy("  service: api\n  ingress:\n    - ports:\n        - {port: 80, name: http}\n"),
            9,
            "unknown field `name`",
        );
        rejects(&policy("  service: api\n  ingress:\n    - rateLimit:\n        packetsPerSecond: 5\n        perSource: true\n"), 10, "unknown field `perSource`");
    }

    #[test]
    fn rejects_wrong_direction_keys() {
        rejects(
            &policy("  service: api\n  ingress:\n    - to: [{service: a}]\n"),
            8,
            "unknown field `to`",
        );
        rejects(
            &policy("  service: api\n  egress:\n    - from: [{service: a}]\n"),
            8,
            "unknown field `from`",
        );
        rejects(
            &policy("  service: api\n  ingressDeny:\n    - to: [{service: a}]\n"),
            8,
            "unknown field `to`",
        );
        rejects(
            &policy("  service: api\n  egressDeny:\n    - from: [{service: a}]\n"),
            8,
            "unknown field `from`",
        );
        rejects(
            &policy("  service: api\n  egress:\n    - peers: [{service: a}]\n"),
            8,
            "unknown field `peers`",
        );
    }

    #[test]
    fn rejects_rate_limits_outside_ingress() {
        rejects(
            &policy(
                "  service: api\n  egress:\n    - to: []\n      rateLimit: {packetsPerSecond: 5}\n",
            ),
            9,
            "only allowed on ingress rules",
        );
        rejects(
            &policy("  service: api\n  ingressDeny:\n    - rateLimit: {packetsPerSecond: 5}\n"),
            8,
            "only allowed on ingress rules",
        );
        rejects(
            &policy("  service: api\n  egressDeny:\n    - rateLimit: {packetsPerSecond: 5}\n"),
            8,
            "only allowed on ingress rules",
        );
    }

    #[test]
    fn rejects_bad_rate_limits() {
        let rl = |body: &str| {
            policy(&format!(
                "  service: api\n  ingress:\n    - rateLimit:\n{body}"
            ))
        };
        rejects(
            &rl("        burst: 5\n"),
            8,
            "needs packetsPerSecond and/or bytesPerSecond",
        );
        rejects(
            &policy("  service: api\n  ingress:\n    - rateLimit: {}\n"),
            8,
            "needs packetsPerSecond",
        );
        rejects(&rl("        packetsPerSecond: 0\n"), 9, "greater than 0");
        rejects(&rl("        bytesPerSecond: -5\n"), 9, "greater than 0");
        rejects(
            &rl("        packetsPerSecond: 10\n        burst: 0\n"),
            10,
            "greater than 0",
        );
        rejects(
            &rl("        packetsPerSecond: 10\n        per: pod\n"),
            10,
            "expected source or rule",
        );
        rejects(
            &rl("        packetsPerSecond: '10'\n"),
            9,
            "must be an integer",
        );
        rejects(
            &rl("        packetsPerSecond: 1.5\n"),
            9,
            "must be an integer",
        );
        rejects(
            &policy("  service: api\n  ingress:\n    - rateLimit: 100\n"),
            8,
            "must be a mapping",
        );
    }

    #[test]
    fn rejects_bad_cidrs() {
        let peer = |p: &str| {
            policy(&format!(
                "  service: api\n  ingress:\n    - from:\n        - {p}\n"
            ))
        };
        rejects(&peer("{cidr: 10.0.0.0/33}"), 9, "invalid CIDR");
        rejects(&peer("{cidr: 10.0.0.5/24}"), 9, "host bits set");
        rejects(&peer("{cidr: 10.0.0.5/24}"), 9, "10.0.0.0/24");
        rejects(&peer("{cidr: 10.0.0.0}"), 9, "missing prefix length");
        rejects(&peer("{cidr: bogus/8}"), 9, "invalid CIDR");
        rejects(&peer("{cidr: 'fd00::1/64'}"), 9, "host bits set");
        rejects(&peer("{cidr: '::ffff:10.0.0.0/104'}"), 9, "IPv4-mapped");
        rejects(
            &peer("{cidr: 10.0.0.0/8, except: [11.0.0.0/16]}"),
            9,
            "not inside",
        );
        rejects(
            &peer("{cidr: 10.0.0.0/8, except: ['fd00::/64']}"),
            9,
            "same address family",
        );
        rejects(
            &peer("{cidr: 10.0.0.0/8, except: [10.1.0.1/16]}"),
            9,
            "host bits set",
        );
        rejects(
            &peer("{cidr: 10.0.0.0/8, except: 10.1.0.0/16}"),
            9,
            "must be a list",
        );
        rejects(
            &peer("{service: web, cidr: 10.0.0.0/8}"),
            9,
            "either `service` or `cidr`",
        );
        rejects(
            &peer("{service: web, except: [10.0.0.0/8]}"),
            9,
            "only allowed with `cidr`",
        );
        rejects(&peer("{}"), 9, "needs `service` or `cidr`");
        rejects(&peer("web"), 9, "must be a mapping");
        let p = only_policy(&peer(
            "{cidr: 'fd00::/64', except: ['fd00::/80', 'fd00::/64']}",
        ));
        assert!(
            matches!(&p.ingress.expect("ingress")[0].peers[0], Peer::Cidr { except, .. } if except.len() == 2)
        );
        let p = only_policy(&peer("{cidr: 0.0.0.0/0}"));
        assert!(p.ingress.expect("ingress")[0].peers[0].cidr_contains("8.8.8.8".parse().unwrap()));
    }

    #[test]
    fn rejects_bad_ports() {
        let port = |p: &str| {
            policy(&format!(
                "  service: api\n  ingress:\n    - ports:\n        - {p}\n"
            ))
        };
        rejects(&port("{port: 0}"), 9, "out of range");
        rejects(&port("{port: 65536}"), 9, "out of range");
        rejects(&port("{port: -1}"), 9, "out of range");
        rejects(
            &port("{port: 99999999999999999999999999999999999999999999}"),
            9,
            "out of range",
        );
        rejects(&port("{port: HTTP}"), 9, "named ports");
        rejects(&port("{port: http, endPort: 90}"), 9, "numeric port");
        let p = only_policy(&port("{port: http}"));
        assert_eq!(
            p.ingress.expect("ingress")[0].ports[0]
                .name
                .map(|n| n.to_string()),
            Some("http".to_string())
        );
        rejects(&port("{port: '80'}"), 9, "named ports");
        rejects(&port("{port: 80.0}"), 9, "must be an integer");
        rejects(&port("{port: true}"), 9, "must be an integer");
        rejects(&port("{endPort: 90}"), 9, "endPort requires port");
        rejects(
            &port("{port: 90, endPort: 80}"),
            9,
            "endPort 80 is less than port 90",
        );
        rejects(&port("{port: 90, endPort: 70000}"), 9, "out of range");
        rejects(&port("{protocol: HTTP, port: 80}"), 9, "unknown protocol");
        rejects(&port("{protocol: 6, port: 80}"), 9, "must be a string");
        rejects(&port("{protocol: ICMP, port: 8}"), 9, "ICMP has no ports");
        rejects(
            &policy("  service: api\n  ingress:\n    - ports: 80\n"),
            8,
            "must be a list",
        );
        let p = only_policy(&port("{protocol: sctp, port: 80, endPort: 80}"));
        let spec = p.ingress.expect("ingress")[0].ports[0];
        assert_eq!(spec.protocol, Protocol::Sctp);
        assert_eq!(spec.range(), (80, 80));
        let p = only_policy(&port("{protocol: Udp, port: 0x35}"));
        assert_eq!(p.ingress.expect("ingress")[0].ports[0].port, Some(53));
    }

    #[test]
    fn rejects_bad_policy_specs() {
        rejects(
            &policy("  mode: audit\n"),
            5,
            "missing required field `service`",
        );
        rejects(
            &policy("  service: api\n  mode: block\n"),
            7,
            "expected enforce or audit",
        );
        rejects(
            &policy("  service: api\n  mode: Enforce\n"),
            7,
            "expected enforce or audit",
        );
        rejects(
            &policy("  service: api\n  ingress: {from: []}\n"),
            7,
            "must be a list",
        );
        rejects(
            &policy("  service: api\n  ingress:\n    - [1]\n"),
            8,
            "must be a mapping",
        );
        rejects(&policy("  service: 'a b'\n"), 6, "invalid spec.service");
        rejects(
            &policy("  service: api\n  ingress:\n    - from: [{service: ''}]\n"),
            8,
            "must not be empty",
        );
        rejects(
            &policy("  service: api\n  ingress:\n    - from: {service: a}\n"),
            8,
            "must be a list",
        );
        rejects(&policy("  service:\n"), 6, "missing value");
    }

    #[test]
    fn rejects_duplicate_names_and_keys() {
        let a = policy("  service: api\n");
        let text = format!("{a}---\n{a}");
        rejects(&text, 11, "duplicate FlowPolicy name \"p\"");
        rejects(&text, 11, "test.yaml:4");
        // Same name, different kinds: fine.
        let w = workload("  service: api\n  addresses: [10.0.0.1]\n").replace("name: w", "name: p");
        assert_eq!(parse(&format!("{a}---\n{w}")).expect("valid").len(), 2);
        rejects(
            &policy("  service: api\n  service: web\n"),
            7,
            "duplicate key `service`",
        );
        rejects(
            &policy("  service: api\n  ingress: []\n  ingress: []\n"),
            8,
            "first defined at line 7",
        );
        rejects(
            &policy("  service: api\n  ingress:\n    - ports: [{port: 1, port: 2}]\n"),
            8,
            "duplicate key `port`",
        );
    }

    #[test]
    fn collects_all_errors_with_positions() {
        let text = policy("  service: api\n  bogus: 1\n  ingress:\n    - ports: [{port: 0}]\n");
        let errors = parse(&text).expect_err("invalid");
        assert_eq!(errors.len(), 2, "{errors}");
        let shown = errors.to_string();
        assert!(
            shown.starts_with("test.yaml:7:3: unknown field `bogus`"),
            "{shown}"
        );
        assert!(shown.contains("\ntest.yaml:9:22: "), "{shown}");
        // An error in one document rejects everything.
        let text = format!(
            "{}---\n{}",
            policy("  service: api\n"),
            policy("  service: 1\n")
        );
        assert!(parse(&text).is_err());
    }

    #[test]
    fn parses_from_nodes_with_positions() {
        let text = format!(
            "items:\n  - {}\n",
            policy("  service: api\n").replace('\n', "\n    ")
        );
        let roots = yaml::load("s.yaml", &text).expect("yaml");
        let Some(Value::Seq(items)) = roots[0].get("items").map(|n| &n.value) else {
            panic!("items")
        };
        let docs = parse_document_nodes("s.yaml", items).expect("valid");
        assert_eq!(
            docs[0].source(),
            &Source {
                file: "s.yaml".into(),
                line: 2
            }
        );
        let text = text.replace("service: api", "service: [api]");
        let roots = yaml::load("s.yaml", &text).expect("yaml");
        let Some(Value::Seq(items)) = roots[0].get("items").map(|n| &n.value) else {
            panic!("items")
        };
        let errors = parse_document_nodes("s.yaml", items).expect_err("invalid");
        assert_eq!(errors.0[0].line, 7, "{errors}");
    }

    #[test]
    fn anchors_and_tags() {
        let p = only_policy(&policy(
            "  service: !!str api\n  ingress:\n    - ports: &p [{port: 80}]\n  egress:\n    - ports: *p\n",
        ));
        assert_eq!(
            p.ingress.expect("i")[0].ports,
            p.egress.expect("e")[0].ports
        );
        rejects(
            &policy("  service: !custom api\n"),
            6,
            "unsupported YAML tag",
        );
    }

    #[test]
    fn policy_set_rules() {
        let docs = parse(EXAMPLE).expect("valid");
        let mut set = PolicySet::from_documents(docs.clone()).expect("set");
        assert_eq!(set.services(), vec!["web".to_string()]);
        let warnings = set.warnings();
        let messages: Vec<String> = warnings.iter().map(ToString::to_string).collect();
        assert_eq!(warnings.len(), 2, "{messages:?}");
        assert!(messages[0].contains("unknown service db"), "{messages:?}");
        assert!(messages[0].starts_with("test.yaml:19:"), "{messages:?}");
        assert!(
            messages[1].contains("unknown service batch"),
            "{messages:?}"
        );

        let err = set.insert(docs[0].clone()).expect_err("duplicate");
        assert!(err.reason.contains("duplicate Workload name"), "{err}");
        assert!(err.reason.contains("test.yaml:1"), "{err}");

        let other =
            parse(&workload("  service: web\n  addresses: ['fd00:10::10']\n")).expect("valid");
        let err = set.insert(other[0].clone()).expect_err("shared address");
        assert!(
            err.reason.contains("already held by Workload \"web-0\""),
            "{err}"
        );
        let errors =
            PolicySet::from_documents([docs.clone(), other.clone()].concat()).expect_err("x");
        assert_eq!(errors.len(), 1);

        // apply: replace by name, all or nothing
        let before = set.clone();
        assert!(set.apply(other.clone()).is_err());
        assert_eq!(set, before);
        let replaced = parse(
            &workload("  service: db\n  addresses: [10.0.0.9]\n").replace("name: w", "name: web-0"),
        )
        .expect("valid");
        let outcomes = set.apply(replaced).expect("apply");
        assert_eq!(outcomes[0].1, ApplyOutcome::Configured);
        assert_eq!(set.services(), vec!["db".to_string()]);
        let outcomes = set.apply(vec![docs[1].clone()]).expect("apply");
        assert_eq!(outcomes[0].1, ApplyOutcome::Unchanged);
        let new = parse(&policy("  service: api\n")).expect("valid");
        assert_eq!(
            set.apply(new.clone()).expect("apply")[0].1,
            ApplyOutcome::Created
        );
        assert!(set.apply([new.clone(), new].concat()).is_err());
        assert_eq!(set.policies_for("api").count(), 2);
        assert_eq!(set.remove("p").len(), 1);
        assert_eq!(set.remove("p").len(), 0);

        let json = serde_json::to_string(&set).expect("json");
        let back: PolicySet = serde_json::from_str(&json).expect("back");
        assert_eq!(back.len(), set.len());
    }

    /// `sensitive` (issue 18): a boolean, `false` when omitted, written back only when true.
    #[test]
    fn sensitive_is_a_boolean_that_round_trips() {
        let p = only_policy(&policy("  service: db\n  sensitive: true\n"));
        assert!(p.sensitive);
        let yaml = Document::FlowPolicy(p.clone()).to_yaml().expect("yaml");
        assert!(yaml.contains("sensitive: true"), "{yaml}");
        let back = only_policy(&yaml);
        assert!(Document::FlowPolicy(back).same_content(&Document::FlowPolicy(p)));
        let p = only_policy(&policy("  service: db\n"));
        assert!(!p.sensitive);
        let yaml = Document::FlowPolicy(p).to_yaml().expect("yaml");
        assert!(!yaml.contains("sensitive"), "{yaml}");
        rejects(
            &policy("  service: db\n  sensitive: 'yes'\n"),
            7,
            "spec.sensitive must be true or false, found a string",
        );
    }

    /// A Workload may not give both `spec.service` and the label it stands for: the first
    /// configured service label (`--service-label`), not a fixed key.
    #[test]
    fn the_service_label_conflict_follows_the_configured_label() {
        use crate::identity::ServiceLabels;
        let text = |labels: &str| {
            workload("  service: web\n  addresses: [10.0.0.1]\n").replace(
                "  name: w\n",
                &format!("  name: w\n  labels: {{{labels}}}\n"),
            )
        };
        let set = |labels: &str, keys: &str| {
            let docs = parse(&text(labels)).expect("parses");
            let keys: ServiceLabels = keys.parse().expect("keys");
            PolicySet::from_documents(docs)
                .expect("set")
                .with_service_labels(keys)
        };
        let err = set("team: x", "team,app").expect_err("team is the service label");
        assert_eq!(
            err.to_string(),
            "test.yaml:1: Workload \"w\": metadata.labels: team is set by spec.service; give one of them"
        );
        assert!(set("team: x", "app.kubernetes.io/name,app").is_ok());
        assert!(set("app.kubernetes.io/name: x", "team").is_ok());
        let err = set("app.kubernetes.io/name: x", "app.kubernetes.io/name,app")
            .expect_err("the default key");
        assert!(err
            .to_string()
            .contains("app.kubernetes.io/name is set by spec.service"));
        // A fallback key is only a label when spec.service gives the service.
        let ok = set("app: x", "app.kubernetes.io/name,app").expect("app is a fallback");
        assert_eq!(ok.services(), vec!["web".to_string()]);
    }

    #[test]
    fn serde_rejects_invalid_input() {
        let bad = r#"{"apiVersion":"enforcer/v1","kind":"FlowPolicy","metadata":{"name":"x"},"spec":{"service":"a","ingress":[{"ports":[{"port":0}]}]}}"#;
        let err = serde_json::from_str::<Document>(bad).expect_err("invalid");
        assert!(err.to_string().contains("out of range"), "{err}");
        let bad = r#"{"apiVersion":"enforcer/v1","kind":"FlowPolicy","metadata":{"name":"x"},"spec":{"service":"a","extra":1}}"#;
        assert!(serde_json::from_str::<Document>(bad).is_err());
        let rule: Rule =
            serde_json::from_str(r#"{"to":[{"cidr":"10.0.0.0/8"}],"ports":[{"port":80}]}"#)
                .expect("rule");
        assert_eq!(rule.ports[0].port, Some(80));
        assert_eq!(
            serde_json::to_value(&rule).expect("json")["peers"][0]["cidr"],
            "10.0.0.0/8"
        );
        assert!(serde_json::from_str::<PortSpec>(r#"{"port":80,"endPort":70}"#).is_err());
        assert_eq!(
            serde_json::from_str::<Protocol>("\"udp\"").expect("udp"),
            Protocol::Udp
        );
    }

    #[test]
    fn protocol_numbers_and_display() {
        assert_eq!(Protocol::Tcp.number(false), 6);
        assert_eq!(Protocol::Udp.number(true), 17);
        assert_eq!(Protocol::Sctp.number(false), 132);
        assert_eq!(Protocol::Icmp.number(false), 1);
        assert_eq!(Protocol::Icmp.number(true), 58);
        let e = crate::errors::PolicyError::new("f.yaml", 3, 0, "bad");
        assert_eq!(e.to_string(), "f.yaml:3: bad");
        let e = crate::errors::PolicyError::new("f.yaml", 3, 7, "bad");
        assert_eq!(e.to_string(), "f.yaml:3:7: bad");
    }
}
