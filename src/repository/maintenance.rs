//! Keeping a repository healthy: prune unreferenced data, check everything end to end, stats.

use std::collections::{BTreeMap, HashSet};

use tokio::io::AsyncReadExt;

use super::error::RepoError;
use super::format::names;
use super::locks;
use super::{Repository, Verify};

/// What a prune removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Packs deleted.
    pub packs_deleted: u64,
    /// Bytes freed.
    pub bytes_freed: u64,
    /// Packs kept although partly unreferenced (no repacking yet).
    pub packs_partly_used: u64,
}

/// One damaged thing found by `check`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckProblem {
    /// The snapshot affected ("" for repository-wide problems).
    pub snapshot: String,
    /// The stream affected.
    pub stream: String,
    /// What is wrong.
    pub problem: String,
}

/// The result of `check`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Snapshots checked.
    pub snapshots: u64,
    /// Streams read back in full.
    pub streams: u64,
    /// Bytes read back and verified.
    pub bytes: u64,
    /// Everything damaged, by snapshot and stream.
    pub problems: Vec<CheckProblem>,
}

/// Sizes of one snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotStats {
    /// Its id.
    pub id: String,
    /// Bytes of its streams.
    pub logical_bytes: u64,
    /// Bytes it added when written.
    pub added_bytes: u64,
}

/// Sizes of the repository.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Per snapshot.
    pub snapshots: Vec<SnapshotStats>,
    /// Bytes of all packs and indexes.
    pub stored_bytes: u64,
    /// Sum of every snapshot's logical bytes.
    pub logical_bytes: u64,
}

impl Repository {
    /// Deletes packs no snapshot references. Refuses (Busy) while a writer runs.
    pub async fn prune(&self) -> Result<PruneReport, RepoError> {
        let lock = locks::acquire(self, "prune", "writer").await?;
        let result = self.prune_unlocked().await;
        lock.release(self).await?;
        result
    }

    async fn prune_unlocked(&self) -> Result<PruneReport, RepoError> {
        let mut referenced = HashSet::new();
        for manifest in self.list_snapshots().await? {
            for stream in manifest.streams {
                referenced.extend(stream.chunks);
            }
        }
        let packs: BTreeMap<String, u64> = self
            .list_names("packs")
            .await?
            .into_iter()
            .map(|(name, size, _)| {
                (
                    name.rsplit('/').next().unwrap_or_default().to_string(),
                    size,
                )
            })
            .collect();
        let mut report = PruneReport::default();
        let mut indexed = HashSet::new();
        for index in self.pack_indexes().await? {
            indexed.insert(index.pack.clone());
            let used = index
                .blobs
                .iter()
                .filter(|b| referenced.contains(&b.id))
                .count();
            if used == 0 {
                // Index first: a pack without an index is plain garbage; an index without its pack is not.
                self.delete_object(&names::index(&index.pack)).await?;
                self.delete_object(&names::pack(&index.pack)).await?;
                report.packs_deleted += 1;
                report.bytes_freed += packs.get(&index.pack).copied().unwrap_or(0);
            } else if used < index.blobs.len() {
                report.packs_partly_used += 1;
            }
        }
        // Packs without an index are left by a writer that crashed between the two uploads.
        for (pack, size) in &packs {
            if !indexed.contains(pack) {
                self.delete_object(&names::pack(pack)).await?;
                report.packs_deleted += 1;
                report.bytes_freed += size;
            }
        }
        Ok(report)
    }

    /// Reads every stream of every snapshot back and verifies it; names what is damaged.
    pub async fn check(&self) -> Result<CheckReport, RepoError> {
        let mut report = CheckReport::default();
        let snapshot_names = self.list_names("snapshots").await?;
        for (name, _, _) in snapshot_names {
            let id = name.trim_start_matches("snapshots/").to_string();
            report.snapshots += 1;
            let manifest = match self.manifest(&id).await {
                Ok(manifest) => manifest,
                Err(err) => {
                    report.problems.push(CheckProblem {
                        snapshot: id,
                        stream: String::new(),
                        problem: err.to_string(),
                    });
                    continue;
                }
            };
            for stream in &manifest.streams {
                report.streams += 1;
                let outcome =
                    async {
                        let mut reader =
                            super::reader::open(self, &id, &stream.name, Verify::Checksum).await?;
                        let mut buffer = vec![0u8; 1 << 20];
                        let mut total = 0u64;
                        loop {
                            let read = reader.read(&mut buffer).await.map_err(|e| {
                                match e.into_inner() {
                                    Some(inner) => match inner.downcast::<RepoError>() {
                                        Ok(repo) => *repo,
                                        Err(other) => RepoError::Io(std::io::Error::other(other)),
                                    },
                                    None => RepoError::corrupt(&stream.name, "read failed"),
                                }
                            })?;
                            if read == 0 {
                                break;
                            }
                            total += read as u64;
                        }
                        Ok::<u64, RepoError>(total)
                    }
                    .await;
                match outcome {
                    Ok(bytes) if bytes == stream.size => report.bytes += bytes,
                    Ok(bytes) => report.problems.push(CheckProblem {
                        snapshot: id.clone(),
                        stream: stream.name.clone(),
                        problem: format!("read {bytes} bytes, the manifest says {}", stream.size),
                    }),
                    Err(err) => report.problems.push(CheckProblem {
                        snapshot: id.clone(),
                        stream: stream.name.clone(),
                        problem: err.to_string(),
                    }),
                }
            }
        }
        Ok(report)
    }

    /// Logical and stored sizes.
    pub async fn stats(&self) -> Result<Stats, RepoError> {
        let mut stats = Stats::default();
        for manifest in self.list_snapshots().await? {
            let logical: u64 = manifest.streams.iter().map(|s| s.size).sum();
            let added: u64 = manifest.streams.iter().map(|s| s.stored_bytes).sum();
            stats.logical_bytes += logical;
            stats.snapshots.push(SnapshotStats {
                id: manifest.id,
                logical_bytes: logical,
                added_bytes: added,
            });
        }
        for prefix in ["packs", "index"] {
            stats.stored_bytes += self
                .list_names(prefix)
                .await?
                .iter()
                .map(|(_, size, _)| size)
                .sum::<u64>();
        }
        Ok(stats)
    }
}
