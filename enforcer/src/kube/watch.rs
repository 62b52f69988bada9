//! `enforcer agent --kubernetes`: kube-rs watchers (reflectors with backoff) of Pods,
//! Namespaces, `NetworkPolicies` and the enforcer CRDs feed the agent the same documents the
//! policy directory would. Any event marks
//! the state dirty; one sync task converts the stores into documents, installs them through the
//! agent's normal path and writes the CRDs' status.
//!
//! Convergence is kube-rs's watcher: a watch that ends is resumed from the last resourceVersion
//! (bookmarks keep it fresh), `410 Gone` triggers a relist, errors (API server restart, dropped
//! connection) back off exponentially and retry. The stores are replaced atomically on relist, so
//! objects deleted while the agent was disconnected disappear.

use std::fmt::Debug;
use std::sync::Arc;

use anyhow::{Context, Result};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tracing::{info, warn};

use super::crd::{ClusterFlowPolicy, FlowPolicy};
use super::metrics::WatchEvent;
use super::status::StatusWriter;
use super::{convert, pods};
use crate::agent::Agent;

/// The reflector stores the sync task reads.
#[derive(Clone)]
pub struct Stores {
    pub pods: Store<Pod>,
    pub namespaces: Store<Namespace>,
    pub network_policies: Store<NetworkPolicy>,
    pub cluster_policies: Store<ClusterFlowPolicy>,
    pub policies: Store<FlowPolicy>,
}

/// Start a reflector of every `K` in the cluster; events are counted and wake `dirty`.
fn reflect<K>(
    client: &Client,
    name: &'static str,
    agent: &Arc<Agent>,
    dirty: &Arc<Notify>,
) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(
        Api::<K>::all(client.clone()),
        watcher::Config::default().any_semantic(),
    )
    .default_backoff()
    .reflect(writer);
    tokio::spawn(drive(stream, name, agent.clone(), dirty.clone()));
    reader
}

/// Watches end after 290 s (as client-go's) and resume from the last bookmark.
fn watcher<K>(api: Api<K>, config: watcher::Config) -> impl Stream<Item = watcher::Result<Event<K>>>
where
    K: Resource + Clone + Debug + DeserializeOwned + Send + 'static,
{
    watcher::watcher(api, config.timeout(290))
}

async fn drive<K>(
    stream: impl Stream<Item = watcher::Result<Event<K>>>,
    name: &'static str,
    agent: Arc<Agent>,
    dirty: Arc<Notify>,
) {
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        let kind = match &event {
            Ok(Event::Apply(_) | Event::InitApply(_)) => WatchEvent::Apply,
            Ok(Event::Delete(_)) => WatchEvent::Delete,
            Ok(Event::Init) => WatchEvent::Relist,
            Ok(Event::InitDone) => WatchEvent::Synced,
            Err(watcher::Error::WatchError(status)) if status.code == 410 => {
                info!(resource = name, "watch: 410 Gone, relisting");
                WatchEvent::Gone
            }
            Err(e) => {
                warn!(resource = name, "watch: {e} (retrying with backoff)");
                WatchEvent::Error
            }
        };
        agent.metrics.kube.count(name, kind);
        // Objects listed during a relist reach the store only at InitDone: wait for it.
        if !matches!(
            kind,
            WatchEvent::Relist | WatchEvent::Error | WatchEvent::Gone
        ) && !matches!(event, Ok(Event::InitApply(_)))
        {
            dirty.notify_one();
        }
    }
}

/// Run the watches and the sync loop until the process ends.
pub async fn run(client: Client, agent: Arc<Agent>, node: String) -> Result<()> {
    agent.metrics.kube.enable();
    // The node taint goes once /readyz would say ready (which waits for the first sync below).
    tokio::spawn(super::node::untaint_when_ready(
        client.clone(),
        agent.clone(),
        node.clone(),
        std::time::Duration::from_millis(500),
    ));
    let dirty = Arc::new(Notify::new());
    let stores = Stores {
        pods: reflect(&client, "pods", &agent, &dirty),
        namespaces: reflect(&client, "namespaces", &agent, &dirty),
        network_policies: reflect(&client, "networkpolicies", &agent, &dirty),
        cluster_policies: reflect(&client, "clusterflowpolicies", &agent, &dirty),
        policies: reflect(&client, "flowpolicies", &agent, &dirty),
    };
    for (name, ready) in [
        ("pods", stores.pods.wait_until_ready().await),
        ("namespaces", stores.namespaces.wait_until_ready().await),
        (
            "networkpolicies",
            stores.network_policies.wait_until_ready().await,
        ),
        (
            "clusterflowpolicies",
            stores.cluster_policies.wait_until_ready().await,
        ),
        ("flowpolicies", stores.policies.wait_until_ready().await),
    ] {
        ready.with_context(|| format!("{name} watch ended before its first list"))?;
    }
    info!("Kubernetes watches synced");
    let mut status = StatusWriter::new(client, node);
    loop {
        match sync(&agent, &stores, &mut status).await {
            Ok(()) => agent.metrics.kube.set_synced(),
            Err(e) => warn!("Kubernetes sync: {e:#}"),
        }
        dirty.notified().await;
    }
}

/// Convert the stores and install the result; then report each policy's verdict in its status.
async fn sync(agent: &Arc<Agent>, stores: &Stores, status: &mut StatusWriter) -> Result<()> {
    let pod_objects = stores.pods.state();
    let mut docs = pods::documents(pod_objects.iter().map(AsRef::as_ref));
    let namespaces = stores
        .namespaces
        .state()
        .into_iter()
        .map(|n| convert::object(&*n));
    let netpols = stores
        .network_policies
        .state()
        .into_iter()
        .map(|n| convert::object(&*n));
    for doc in namespaces.chain(netpols) {
        match doc {
            Ok(doc) => docs.push(doc),
            Err(e) => warn!("left out: {e}"),
        }
    }
    let mut verdicts = Vec::new();
    for policy in stores.cluster_policies.state() {
        let result = convert::cluster_flow_policy(&policy);
        if let Ok(doc) = &result {
            docs.push(doc.clone());
        }
        verdicts.push(super::status::Verdict::cluster(&policy, result.err()));
    }
    for policy in stores.policies.state() {
        let result = convert::namespaced_flow_policy(&policy);
        if let Ok(doc) = &result {
            docs.push(doc.clone());
        }
        verdicts.push(super::status::Verdict::namespaced(&policy, result.err()));
    }
    let generation = agent.set_cluster_documents(docs).await?;
    status.write(&verdicts, generation).await;
    Ok(())
}
