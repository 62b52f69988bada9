//! A stand-in for kube-apiserver speaking its list/watch protocol over HTTP/1.1, for the agent's
//! `--kubernetes` tests (no real API server can run on these machines; the shapes are those of
//! `tests/fixtures/kube/`, see its README).
//!
//! Collections (pods, namespaces, networkpolicies, the enforcer CRDs) are keyed by their URL
//! path (`/api/v1/pods`). Every change bumps a global
//! resourceVersion and is kept in an event log that watches replay from their resourceVersion;
//! [`ApiServer::compact`] forgets the log (a resume then gets `410 Gone`), and
//! [`ApiServer::drop_connections`] ends every open watch, as an API server restart does.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use tokio::sync::watch;

/// Pods, `ClusterFlowPolicies` and `FlowPolicies`, as the agent watches them.
pub const PODS: &str = "/api/v1/pods";
pub const CLUSTER_FLOW_POLICIES: &str = "/apis/enforcer.dev/v1alpha1/clusterflowpolicies";
pub const FLOW_POLICIES: &str = "/apis/enforcer.dev/v1alpha1/flowpolicies";
pub const NAMESPACES: &str = "/api/v1/namespaces";
pub const NETWORK_POLICIES: &str = "/apis/networking.k8s.io/v1/networkpolicies";
/// Nodes: read (`GET /api/v1/nodes/NAME`) and patched (JSON merge patch) by the agent.
pub const NODES: &str = "/api/v1/nodes";

const POD_FIXTURE: &str = include_str!("../fixtures/kube/pod.json");
const GONE_FIXTURE: &str = include_str!("../fixtures/kube/gone.json");

#[derive(Default)]
struct State {
    resource_version: u64,
    /// path → name → object.
    objects: BTreeMap<&'static str, BTreeMap<String, Value>>,
    /// (resourceVersion, path, event type, object) since the last compaction.
    log: Vec<(u64, &'static str, &'static str, Value)>,
    /// Watches from below this resourceVersion get 410 Gone.
    compacted: u64,
    /// Status patches received: (path of the object, body).
    status_patches: Vec<(String, Value)>,
    /// Node patches received: (node name, content type, body, the answer's status code).
    node_patches: Vec<NodePatch>,
    /// Collections answering 503 (an API server that cannot serve them yet).
    failing: std::collections::BTreeSet<&'static str>,
    /// Requests served, by "METHOD path?query".
    requests: Vec<String>,
}

/// A PATCH of a Node, as received.
#[derive(Debug, Clone)]
pub struct NodePatch {
    pub node: String,
    pub content_type: String,
    pub body: Value,
    /// 200, or 409 when the patch's resourceVersion was not the node's.
    pub status: u16,
}

/// The stand-in; clones share the server.
#[derive(Clone)]
pub struct ApiServer {
    state: Arc<Mutex<State>>,
    /// Bumped on every change (wakes watches) and by `drop_connections` (ends them).
    changed: watch::Sender<(u64, u64)>,
    pub addr: SocketAddr,
}

fn kind_of(path: &str) -> (&'static str, &'static str, bool) {
    match path {
        PODS => ("Pod", "v1", true),
        CLUSTER_FLOW_POLICIES => ("ClusterFlowPolicy", "enforcer.dev/v1alpha1", false),
        NAMESPACES => ("Namespace", "v1", false),
        NETWORK_POLICIES => ("NetworkPolicy", "networking.k8s.io/v1", true),
        NODES => ("Node", "v1", false),
        _ => ("FlowPolicy", "enforcer.dev/v1alpha1", true),
    }
}

fn collection(path: &str) -> Option<&'static str> {
    [
        PODS,
        CLUSTER_FLOW_POLICIES,
        FLOW_POLICIES,
        NAMESPACES,
        NETWORK_POLICIES,
        NODES,
    ]
    .into_iter()
    .find(|c| *c == path)
}

fn query(req: &Request<hyper::body::Incoming>) -> BTreeMap<String, String> {
    req.uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

type Body = BoxBody<Bytes, Infallible>;

fn full(status: StatusCode, body: &Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().expect("header"));
    response
}

/// A Pod shaped as the API server serves it (the fixture with these fields replaced).
pub fn pod(namespace: &str, name: &str, labels: &[(&str, &str)], ips: &[&str]) -> Value {
    let mut pod: Value = serde_json::from_str(POD_FIXTURE).expect("pod fixture");
    pod["metadata"]["name"] = json!(name);
    pod["metadata"]["namespace"] = json!(namespace);
    pod["metadata"]["generateName"] = Value::Null;
    pod["metadata"]["uid"] = json!(format!("uid-{namespace}-{name}"));
    pod["metadata"]["labels"] = labels
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    pod["status"]["podIP"] = json!(ips.first());
    pod["status"]["podIPs"] = ips.iter().map(|ip| json!({"ip": ip})).collect();
    pod
}

/// A `ClusterFlowPolicy` object with `spec`.
pub fn cluster_flow_policy(name: &str, spec: &Value) -> Value {
    json!({
        "apiVersion": "enforcer.dev/v1alpha1",
        "kind": "ClusterFlowPolicy",
        "metadata": {"name": name, "uid": format!("uid-{name}"), "generation": 1,
                     "creationTimestamp": "2026-11-29T10:00:00Z"},
        "spec": spec,
    })
}

/// A `Status` object, as the API server answers errors.
fn api_status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn key(object: &Value) -> String {
    let meta = &object["metadata"];
    match meta["namespace"].as_str() {
        Some(ns) => format!("{ns}/{}", meta["name"].as_str().unwrap_or_default()),
        None => meta["name"].as_str().unwrap_or_default().to_owned(),
    }
}

impl ApiServer {
    /// Serve on `listener` (bound by the caller, e.g. inside a node's network namespace) from a
    /// runtime of its own.
    pub fn start(listener: std::net::TcpListener) -> Result<ApiServer> {
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (changed, _) = watch::channel((0, 0));
        let server = ApiServer {
            state: Arc::default(),
            changed,
            addr,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let s = server.clone();
        std::thread::spawn(move || runtime.block_on(s.serve(listener)));
        Ok(server)
    }

    async fn serve(self, listener: std::net::TcpListener) -> Result<()> {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        loop {
            let (stream, _) = listener.accept().await?;
            let server = self.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let server = server.clone();
                    async move { Ok::<_, Infallible>(server.handle(req).await) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Create or replace an object (ADDED or MODIFIED); returns its new resourceVersion.
    pub fn put(&self, path: &'static str, mut object: Value) -> u64 {
        let mut state = self.lock();
        state.resource_version += 1;
        let rv = state.resource_version;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let key = key(&object);
        let previous = state
            .objects
            .entry(path)
            .or_default()
            .insert(key, object.clone());
        let kind = if previous.is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        state.log.push((rv, path, kind, object));
        drop(state);
        self.changed.send_modify(|(changes, _)| *changes += 1);
        rv
    }

    /// Delete an object by `namespace/name` (or `name`); DELETED carries its last state.
    pub fn delete(&self, path: &'static str, key: &str) {
        let mut state = self.lock();
        let Some(mut object) = state.objects.entry(path).or_default().remove(key) else {
            return;
        };
        state.resource_version += 1;
        object["metadata"]["resourceVersion"] = json!(state.resource_version.to_string());
        let rv = state.resource_version;
        state.log.push((rv, path, "DELETED", object));
        drop(state);
        self.changed.send_modify(|(changes, _)| *changes += 1);
    }

    /// Forget the event log: a watch resuming from an older resourceVersion gets 410 Gone.
    pub fn compact(&self) {
        let mut state = self.lock();
        state.compacted = state.resource_version + 1;
        state.log.clear();
    }

    /// End every open watch (their connections close), as an API server restart does.
    pub fn drop_connections(&self) {
        self.changed.send_modify(|(_, drops)| *drops += 1);
    }

    /// The status patches received so far: (object path, body).
    pub fn status_patches(&self) -> Vec<(String, Value)> {
        self.lock().status_patches.clone()
    }

    /// Make `path`'s lists and watches answer 503 Service Unavailable (`on`), or serve again.
    pub fn fail(&self, path: &'static str, on: bool) {
        let mut state = self.lock();
        if on {
            state.failing.insert(path);
        } else {
            state.failing.remove(path);
        }
    }

    /// The Node patches received so far.
    pub fn node_patches(&self) -> Vec<NodePatch> {
        self.lock().node_patches.clone()
    }

    /// The object `name` of `path`, as stored.
    pub fn get(&self, path: &'static str, name: &str) -> Option<Value> {
        self.lock().objects.get(path)?.get(name).cloned()
    }

    /// The requests served so far ("METHOD path?query").
    pub fn requests(&self) -> Vec<String> {
        self.lock().requests.clone()
    }

    async fn handle(&self, req: Request<hyper::body::Incoming>) -> Response<Body> {
        let target = req
            .uri()
            .path_and_query()
            .map(ToString::to_string)
            .unwrap_or_default();
        self.lock()
            .requests
            .push(format!("{} {target}", req.method()));
        let path = req.uri().path().to_owned();
        let q = query(&req);
        if req.method() == Method::PATCH && path.ends_with("/status") {
            let body = req
                .into_body()
                .collect()
                .await
                .map(http_body_util::Collected::to_bytes);
            return self.patch_status(&path, &body.unwrap_or_default());
        }
        if let Some(name) = path.strip_prefix(&format!("{NODES}/")) {
            let name = name.to_owned();
            return match *req.method() {
                Method::GET => self.get(NODES, &name).map_or_else(
                    || full(StatusCode::NOT_FOUND, &api_status(404, "NotFound", &path)),
                    |node| full(StatusCode::OK, &node),
                ),
                Method::PATCH => {
                    let content_type = req
                        .headers()
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    let body = req
                        .into_body()
                        .collect()
                        .await
                        .map(http_body_util::Collected::to_bytes);
                    self.patch_node(&name, &content_type, &body.unwrap_or_default())
                }
                _ => full(
                    StatusCode::METHOD_NOT_ALLOWED,
                    &api_status(405, "MethodNotAllowed", &path),
                ),
            };
        }
        let Some(collection) = collection(&path) else {
            return full(StatusCode::NOT_FOUND, &api_status(404, "NotFound", &path));
        };
        if self.lock().failing.contains(collection) {
            return full(
                StatusCode::SERVICE_UNAVAILABLE,
                &api_status(
                    503,
                    "ServiceUnavailable",
                    "the server is currently unable to handle the request",
                ),
            );
        }
        if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
            let from = q
                .get("resourceVersion")
                .and_then(|rv| rv.parse().ok())
                .unwrap_or(0);
            let bookmarks = q.get("allowWatchBookmarks").is_some_and(|b| b == "true");
            return self.watch(collection, from, bookmarks);
        }
        self.list(collection)
    }

    fn list(&self, path: &'static str) -> Response<Body> {
        let state = self.lock();
        let (kind, api_version, _) = kind_of(path);
        let items: Vec<Value> = state
            .objects
            .get(path)
            .into_iter()
            .flat_map(BTreeMap::values)
            .map(|o| {
                // Items of a list carry no kind/apiVersion.
                let mut o = o.clone();
                if let Some(map) = o.as_object_mut() {
                    map.remove("kind");
                    map.remove("apiVersion");
                }
                o
            })
            .collect();
        full(
            StatusCode::OK,
            &json!({"kind": format!("{kind}List"), "apiVersion": api_version,
                    "metadata": {"resourceVersion": state.resource_version.to_string()},
                    "items": items}),
        )
    }

    /// Events of `path` after `from`, then new ones as they come; a BOOKMARK after each batch
    /// when asked; 410 Gone for a compacted `from`.
    fn watch(&self, path: &'static str, from: u64, bookmarks: bool) -> Response<Body> {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
        let server = self.clone();
        let mut changed = self.changed.subscribe();
        let drops = changed.borrow().1;
        tokio::spawn(async move {
            let mut sent = from;
            if from < server.lock().compacted {
                let _ = tx
                    .send(Bytes::from(format!("{}\n", GONE_FIXTURE.trim())))
                    .await;
                return;
            }
            loop {
                let (events, rv) = {
                    let state = server.lock();
                    let events: Vec<String> = state
                        .log
                        .iter()
                        .filter(|(rv, p, _, _)| *rv > sent && *p == path)
                        .map(|(_, _, t, o)| json!({"type": t, "object": o}).to_string() + "\n")
                        .collect();
                    (events, state.resource_version)
                };
                for event in events {
                    if tx.send(Bytes::from(event)).await.is_err() {
                        return;
                    }
                }
                if bookmarks && rv > sent {
                    let (kind, api_version, _) = kind_of(path);
                    let bookmark = json!({"type": "BOOKMARK", "object": {"kind": kind,
                        "apiVersion": api_version, "metadata": {"resourceVersion": rv.to_string()}}});
                    if tx
                        .send(Bytes::from(bookmark.to_string() + "\n"))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                sent = rv;
                let ended = tokio::time::timeout(Duration::from_mins(1), changed.changed()).await;
                if !matches!(ended, Ok(Ok(()))) || changed.borrow().1 != drops {
                    return; // dropped connection, or the watch's timeout
                }
            }
        });
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
        });
        let mut response = Response::new(BodyExt::boxed(StreamBody::new(stream)));
        response
            .headers_mut()
            .insert("content-type", "application/json".parse().expect("header"));
        response
    }

    /// Server-side apply of a status: merged into the object per `nodes[].node` and
    /// `conditions[].type`, then a MODIFIED event.
    fn patch_status(&self, path: &str, body: &Bytes) -> Response<Body> {
        let Ok(applied) = serde_json::from_slice::<Value>(body) else {
            return full(
                StatusCode::BAD_REQUEST,
                &api_status(400, "BadRequest", "not JSON"),
            );
        };
        self.lock()
            .status_patches
            .push((path.to_owned(), applied.clone()));
        let trimmed = path.trim_end_matches("/status");
        let (dir, name) = trimmed.rsplit_once('/').unwrap_or_default();
        let (list_path, key) = match dir.split_once("/namespaces/") {
            Some((prefix, rest)) => {
                let (ns, plural) = rest.split_once('/').unwrap_or_default();
                (format!("{prefix}/{plural}"), format!("{ns}/{name}"))
            }
            None => (dir.to_owned(), name.to_owned()),
        };
        let Some(collection) = collection(&list_path) else {
            return full(StatusCode::NOT_FOUND, &api_status(404, "NotFound", path));
        };
        let object = self
            .lock()
            .objects
            .get(collection)
            .and_then(|c| c.get(&key))
            .cloned();
        let Some(mut object) = object else {
            return full(StatusCode::NOT_FOUND, &api_status(404, "NotFound", path));
        };
        merge_status(&mut object["status"], &applied["status"]);
        self.put(collection, object.clone());
        full(StatusCode::OK, &object)
    }
}

impl ApiServer {
    /// A JSON merge patch (RFC 7386) of a Node, refused with 409 Conflict when it names a
    /// resourceVersion other than the node's (the API server's optimistic concurrency).
    fn patch_node(&self, name: &str, content_type: &str, body: &Bytes) -> Response<Body> {
        let Ok(patch) = serde_json::from_slice::<Value>(body) else {
            return full(
                StatusCode::BAD_REQUEST,
                &api_status(400, "BadRequest", "not JSON"),
            );
        };
        let Some(mut node) = self.get(NODES, name) else {
            return full(StatusCode::NOT_FOUND, &api_status(404, "NotFound", name));
        };
        let mut record = NodePatch {
            node: name.to_owned(),
            content_type: content_type.to_owned(),
            body: patch.clone(),
            status: 200,
        };
        let wanted = &patch["metadata"]["resourceVersion"];
        let conflict = !wanted.is_null() && *wanted != node["metadata"]["resourceVersion"];
        if conflict || content_type != "application/merge-patch+json" {
            record.status = if conflict { 409 } else { 415 };
            self.lock().node_patches.push(record);
            return if conflict {
                full(
                    StatusCode::CONFLICT,
                    &api_status(409, "Conflict", "the object has been modified"),
                )
            } else {
                full(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    &api_status(415, "UnsupportedMediaType", content_type),
                )
            };
        }
        self.lock().node_patches.push(record);
        merge_patch(&mut node, &patch);
        self.put(NODES, node.clone());
        full(StatusCode::OK, &self.get(NODES, name).unwrap_or(node))
    }
}

/// RFC 7386: objects merge key by key, `null` removes a key, anything else replaces.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Some(fields) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    for (key, value) in fields {
        if value.is_null() {
            if let Some(map) = target.as_object_mut() {
                map.remove(key);
            }
        } else {
            merge_patch(&mut target[key], value);
        }
    }
}

/// A Node as the API server serves it: `podCIDRs`, and `taints` (key, effect).
pub fn node(name: &str, pod_cidrs: &[&str], taints: &[(&str, &str)]) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "uid": format!("uid-node-{name}"),
                     "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"},
                     "creationTimestamp": "2026-11-29T10:00:00Z"},
        "spec": {"podCIDR": pod_cidrs.first(), "podCIDRs": pod_cidrs,
                 "taints": taints.iter().map(|(key, effect)| json!({"key": key, "effect": effect}))
                     .collect::<Vec<_>>()},
        "status": {"addresses": [{"type": "Hostname", "address": name}]},
    })
}

/// Merge list-map entries of `patch` into `status` (keys: `node`, `type`).
fn merge_status(status: &mut Value, patch: &Value) {
    if !status.is_object() {
        *status = json!({});
    }
    for (field, key) in [("nodes", "node"), ("conditions", "type")] {
        let entries = status[field].as_array().cloned().unwrap_or_default();
        let mut merged: BTreeMap<String, Value> = entries
            .into_iter()
            .map(|e| (e[key].as_str().unwrap_or_default().to_owned(), e))
            .collect();
        for e in patch[field].as_array().into_iter().flatten() {
            merged.insert(e[key].as_str().unwrap_or_default().to_owned(), e.clone());
        }
        status[field] = merged.into_values().collect();
    }
}

/// A kubeconfig for a plain-HTTP server at `addr` (no credentials).
pub fn kubeconfig(addr: SocketAddr) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: standin\n  cluster:\n    server: http://{addr}\n\
         contexts:\n- name: standin\n  context:\n    cluster: standin\n    user: standin\n\
         current-context: standin\nusers:\n- name: standin\n  user: {{}}\n"
    )
}

/// Bind the stand-in on 127.0.0.1 inside network namespace `ns`.
pub fn start_in_netns(ns: &str) -> Result<ApiServer> {
    let listener = crate::netns::run_in_netns(ns, || {
        std::net::TcpListener::bind("127.0.0.1:0").context("binding the API stand-in")
    })?;
    ApiServer::start(listener)
}
