//! The orphan watchdog: a shim that containerd no longer knows exits by
//! itself, releasing what it holds.

use super::{Runtime, TaskService};
use crate::container::BundleId;
use crate::containerd_api::{container_known, Known};
use crate::lifecycle::Container as _;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Why a container's bundle says containerd forgot it: the directory is
/// gone, or another directory (containerd made a new bundle for a new task
/// of the same id) stands in its place.
fn bundle_forgotten(bundle: &std::path::Path, at_create: Option<BundleId>) -> Option<String> {
    match BundleId::of(bundle) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Some(format!("its bundle {} is gone", bundle.display()))
        }
        Ok(now) if at_create.is_some_and(|then| then != now) => Some(format!(
            "its bundle {} was replaced by another",
            bundle.display()
        )),
        _ => None,
    }
}

/// Containers a shim serves are asked about every this many checks (their
/// bundles are looked at every check): containerd removes the bundle of a
/// task it forgets, so the question is a second opinion and kept rare. The
/// task a shim was started for, before any Create, is asked about at every
/// check.
const ASK_EVERY: u64 = 6;

/// NOT_FOUND answers in a row from containerd that make a container
/// forgotten (a check interval apart): one could be a containerd that
/// answers before it has loaded everything; no answer counts for nothing.
const NOT_FOUND_STRIKES: u32 = 2;

impl<R: Runtime> TaskService<R> {
    /// The orphan watchdog: a shim that containerd no longer knows exits by
    /// itself, releasing what it holds. Every `[orphan] check_seconds`:
    /// - a container whose bundle containerd removed (or replaced), or
    ///   (with `ask_containerd`, every `ASK_EVERY` checks) whose record
    ///   containerd's containers API answers NOT_FOUND for twice in a row,
    ///   is killed and cleaned up as a Delete would (range, cgroup, run dir);
    /// - with no container left and no Create under way, the shim exits:
    ///   at once if it just forgot its last container or if the task it was
    ///   started for is forgotten before any Create came (its bundle gone,
    ///   or NOT_FOUND twice), else once it has had nothing to serve for
    ///   `grace_seconds`.
    pub(super) async fn watch_orphans(&self) {
        let mut strikes: HashMap<String, u32> = HashMap::new();
        let mut idle_since = Some(Instant::now());
        let mut served = false;
        // Checks until the containers served are asked about again.
        let mut until_ask: u64 = ASK_EVERY;
        loop {
            until_ask -= 1;
            let ask_held = until_ask == 0;
            if ask_held {
                until_ask = ASK_EVERY;
            }
            let settings = match self.inner.orphan.lock() {
                Ok(o) => o.clone(),
                Err(p) => p.into_inner().clone(),
            };
            tokio::time::sleep(settings.check()).await;
            let held: Vec<(String, std::path::PathBuf, Option<BundleId>)> = {
                let cs = self.inner.containers.lock().await;
                cs.values()
                    .map(|c| (c.id.clone(), c.bundle.clone(), c.bundle_id))
                    .collect()
            };
            served |= !held.is_empty();
            let mut forgotten = Vec::new();
            for (id, bundle, at_create) in &held {
                if let Some(why) = bundle_forgotten(bundle, *at_create) {
                    forgotten.push((id.clone(), why));
                } else if settings.ask_containerd && ask_held {
                    if let Some(why) = self.not_found(id, &mut strikes).await {
                        forgotten.push((id.clone(), why));
                    }
                }
            }
            strikes.retain(|id, _| {
                held.iter().any(|(h, _, _)| h == id) || *id == self.inner.origin.id
            });
            for (id, why) in &forgotten {
                self.forget(id, why).await;
            }
            // Nothing to serve?
            if !self.inner.containers.lock().await.is_empty()
                || self.inner.creating.load(Ordering::SeqCst) > 0
            {
                idle_since = None;
                continue;
            }
            let since = *idle_since.get_or_insert_with(Instant::now);
            let origin = &self.inner.origin;
            let why = if !forgotten.is_empty() {
                Some("containerd forgot its last container".to_string())
            } else if since.elapsed() >= settings.grace() {
                Some(format!(
                    "it has had no container to serve for {} s ([orphan] grace_seconds)",
                    since.elapsed().as_secs()
                ))
            } else if served {
                None
            } else if let Some(why) = origin
                .bundle
                .as_deref()
                .and_then(|b| bundle_forgotten(b, None))
            {
                Some(format!("no Create came for {} and {why}", origin.id))
            } else if settings.ask_containerd && !origin.id.is_empty() {
                self.not_found(&origin.id, &mut strikes)
                    .await
                    .map(|why| format!("no Create came and {why}"))
            } else {
                None
            };
            let Some(why) = why else { continue };
            // Decided under the containers' lock, against a Create that
            // just began (it counts itself first, then looks at `exiting`).
            {
                let cs = self.inner.containers.lock().await;
                if !cs.is_empty() || self.inner.creating.load(Ordering::SeqCst) > 0 {
                    idle_since = None;
                    continue;
                }
                self.inner.exiting.store(true, Ordering::SeqCst);
                if self.inner.creating.load(Ordering::SeqCst) > 0 {
                    self.inner.exiting.store(false, Ordering::SeqCst);
                    idle_since = None;
                    continue;
                }
            }
            log::warn!(
                "shim {} (pid {}) exits: containerd no longer needs it: {why}",
                origin.id,
                std::process::id()
            );
            self.inner.pods.lock().await.clear();
            self.inner.exit.signal();
            return;
        }
    }

    /// Asks containerd whether it has container `id`; the reason it is
    /// forgotten once it answered NOT_FOUND `NOT_FOUND_STRIKES` times in a
    /// row. No answer changes nothing.
    async fn not_found(&self, id: &str, strikes: &mut HashMap<String, u32>) -> Option<String> {
        let origin = &self.inner.origin;
        if origin.address.is_empty() {
            return None;
        }
        match container_known(&origin.address, &self.inner.namespace, id).await {
            Ok(Known::Yes) => {
                strikes.remove(id);
                None
            }
            Ok(Known::No) => {
                let n = strikes.entry(id.to_string()).or_default();
                *n += 1;
                (*n >= NOT_FOUND_STRIKES).then(|| {
                    format!(
                        "containerd at {} has no container {id} in namespace {} ({} answers in a row)",
                        origin.address,
                        self.inner.namespace,
                        *n
                    )
                })
            }
            Err(e) => {
                log::debug!("orphan check of {id}: no answer from containerd: {e}");
                None
            }
        }
    }

    /// A container containerd has forgotten: killed and everything it holds
    /// released (nobody will Delete it).
    async fn forget(&self, id: &str, why: &str) {
        log::warn!(
            "containerd no longer knows container {id}: {why}; killing it and releasing its ID range, cgroup and run dir"
        );
        let c = match self.stop_and_take(id).await {
            Ok(c) => c,
            Err(_) => return, // deleted meanwhile
        };
        if let Err(e) = tokio::task::spawn_blocking(move || c.mech.release()).await {
            log::error!("cleaning up forgotten container {id}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_removed_or_replaced_is_forgotten() {
        let d = tempfile::tempdir().expect("tempdir");
        let bundle = d.path().join("c1");
        std::fs::create_dir(&bundle).expect("bundle");
        let at_create = BundleId::of(&bundle).ok();
        assert_eq!(bundle_forgotten(&bundle, at_create), None, "still there");
        assert_eq!(bundle_forgotten(&bundle, None), None);
        // containerd made a new bundle for a new task of the same id (a
        // old one, renamed, keeps its inode from being reused at once).
        std::fs::rename(&bundle, d.path().join("old")).expect("rename");
        std::fs::create_dir(&bundle).expect("new bundle");
        let why = bundle_forgotten(&bundle, at_create).expect("replaced");
        assert!(why.contains("replaced"), "{why}");
        std::fs::remove_dir(&bundle).expect("remove");
        let why = bundle_forgotten(&bundle, at_create).expect("gone");
        assert!(why.contains("is gone"), "{why}");
        assert!(bundle_forgotten(&bundle, None).is_some());
    }
}
