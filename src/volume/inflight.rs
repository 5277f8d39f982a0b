//! What a backup's walk holds while entries are in flight, and the bounds on it: budgets of
//! bytes and open files that readers take from without waiting, the count of open
//! directories the lister waits on, and the hardlink table (docs/volumes.md has the figures).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use super::fs::Dir;

/// A shared cap; what is taken comes back when the [`Held`] share is dropped. Takers never
/// wait: one that does not fit leaves its entry to the encoder, so nothing deadlocks.
pub(super) struct Budget {
    cap: u64,
    used: Mutex<u64>,
}

impl Budget {
    pub(super) fn new(cap: u64) -> Arc<Self> {
        Arc::new(Self {
            cap,
            used: Mutex::new(0),
        })
    }

    pub(super) fn try_take(self: &Arc<Self>, amount: u64) -> Option<Held> {
        let mut used = self.used.lock().ok()?;
        if *used + amount > self.cap {
            return None;
        }
        *used += amount;
        Some(Held {
            budget: self.clone(),
            amount,
        })
    }
}

/// A share of a [`Budget`], given back on drop.
pub(super) struct Held {
    budget: Arc<Budget>,
    amount: u64,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Ok(mut used) = self.budget.used.lock() {
            *used = used.saturating_sub(self.amount);
        }
    }
}

/// The readers' budgets.
pub(super) struct Limits {
    pub data: Arc<Budget>,
    pub meta: Arc<Budget>,
    pub open_files: Arc<Budget>,
}

/// How many directories are open; the lister waits for closed ones in flight to go, until
/// the encoder stops (then nothing in flight will ever be taken, and the lister must not wait).
pub(super) struct DirCount {
    live: Mutex<usize>,
    freed: Condvar,
    stopped: AtomicBool,
}

impl DirCount {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self {
            live: Mutex::new(0),
            freed: Condvar::new(),
            stopped: AtomicBool::new(false),
        })
    }

    pub(super) fn wait_below(&self, limit: usize) {
        let Ok(mut live) = self.live.lock() else {
            return;
        };
        while *live >= limit && !self.stopped.load(Ordering::SeqCst) {
            live = match self.freed.wait(live) {
                Ok(live) => live,
                Err(_) => return,
            };
        }
    }

    /// The encoder is done (or failed): no more waiting.
    pub(super) fn stop(&self) {
        if let Ok(_live) = self.live.lock() {
            self.stopped.store(true, Ordering::SeqCst);
        }
        self.freed.notify_all();
    }
}

/// A directory opened by the lister, counted while open.
pub(super) struct ListedDir {
    dir: Dir,
    count: Arc<DirCount>,
}

impl ListedDir {
    pub(super) fn new(dir: Dir, count: &Arc<DirCount>) -> Arc<Self> {
        if let Ok(mut live) = count.live.lock() {
            *live += 1;
        }
        Arc::new(Self {
            dir,
            count: count.clone(),
        })
    }
}

impl std::ops::Deref for ListedDir {
    type Target = Dir;
    fn deref(&self) -> &Dir {
        &self.dir
    }
}

impl Drop for ListedDir {
    fn drop(&mut self) {
        if let Ok(mut live) = self.count.live.lock() {
            *live = live.saturating_sub(1);
        }
        self.count.freed.notify_all();
    }
}

/// Files with several links whose other names the stream has not reached yet: each costs its
/// first name's bytes plus about 80 bytes of table, and goes once its last name is seen (or
/// stays, when some of its links are outside the tree).
#[derive(Default)]
pub(super) struct LinkTable {
    /// (device, inode) → (first name, links not seen yet)
    waiting: HashMap<(u64, u64), (Vec<u8>, u64)>,
}

impl LinkTable {
    /// The first name of this file when `path` is a later one; None when it is the first.
    pub(super) fn seen(&mut self, dev: u64, ino: u64, nlink: u64, path: &[u8]) -> Option<Vec<u8>> {
        let Some((first, remaining)) = self.waiting.get_mut(&(dev, ino)) else {
            self.waiting
                .insert((dev, ino), (path.to_vec(), nlink.saturating_sub(1)));
            return None;
        };
        let first = first.clone();
        *remaining = remaining.saturating_sub(1);
        if *remaining == 0 {
            self.waiting.remove(&(dev, ino));
        }
        Some(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hardlink_table_forgets_a_file_once_all_its_names_are_seen() {
        let mut links = LinkTable::default();
        assert_eq!(links.seen(1, 7, 3, b"a"), None);
        assert_eq!(links.seen(1, 8, 2, b"b"), None);
        assert_eq!(links.seen(1, 7, 3, b"c"), Some(b"a".to_vec()));
        assert_eq!(links.seen(1, 8, 2, b"d"), Some(b"b".to_vec()));
        assert_eq!(links.waiting.len(), 1, "b's two names are both seen");
        assert_eq!(links.seen(1, 7, 3, b"e"), Some(b"a".to_vec()));
        assert!(links.waiting.is_empty());
    }

    #[test]
    fn a_budget_share_comes_back_when_it_is_dropped() {
        let budget = Budget::new(10);
        let held = budget.try_take(8).expect("fits");
        assert!(budget.try_take(3).is_none(), "over the cap");
        drop(held);
        assert!(budget.try_take(10).is_some(), "given back");
    }
}
