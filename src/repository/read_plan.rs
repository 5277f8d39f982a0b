//! Planning a stream's reads: consecutive chunks whose blobs lie back to back (or nearly) in
//! one pack are fetched with one ranged request. Pure: the index is given.

use std::ops::Range;
use std::sync::Arc;

use super::error::RepoError;
use super::format::ChunkId;
use super::{Index, Location};

/// Largest ranged read: few requests (S3 bills each), bounded memory.
pub(crate) const MAX_READ: u64 = 2 * 1024 * 1024;
/// Bytes of other blobs a read may skip rather than start a new request.
pub(crate) const MAX_GAP: u64 = 256 * 1024;

/// One ranged read: chunks that follow each other in the stream and lie back to back (or
/// nearly) in one pack, fetched with one request and decoded in its own buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PackRead {
    pub pack: Arc<str>,
    pub range: Range<u64>,
    /// Each chunk's id, its blob's place within the read, and its plaintext length.
    pub blobs: Vec<(ChunkId, Range<usize>, usize)>,
}

impl PackRead {
    fn starting(id: ChunkId, location: &Location) -> Self {
        let mut read = Self {
            pack: location.pack.clone(),
            range: location.offset..location.offset,
            blobs: Vec::new(),
        };
        read.push(id, location);
        read
    }

    /// Whether the blob at `location` can join without reading backwards, skipping more than
    /// [`MAX_GAP`] or growing beyond [`MAX_READ`].
    fn can_take(&self, location: &Location) -> bool {
        let end = location.offset.saturating_add(u64::from(location.length));
        self.pack == location.pack
            && location.offset >= self.range.end
            && location.offset - self.range.end <= MAX_GAP
            && end - self.range.start <= MAX_READ
    }

    fn push(&mut self, id: ChunkId, location: &Location) {
        let start = (location.offset - self.range.start) as usize;
        self.range.end = location.offset.saturating_add(u64::from(location.length));
        self.blobs.push((
            id,
            start..start + location.length as usize,
            location.raw_length as usize,
        ));
    }
}

/// Groups a stream's chunks, in order, into [`PackRead`]s (pure: the index is given).
pub(crate) struct ReadPlan {
    ids: std::iter::Peekable<std::vec::IntoIter<ChunkId>>,
    index: Arc<Index>,
}

impl ReadPlan {
    pub(crate) fn new(ids: Vec<ChunkId>, index: Arc<Index>) -> Self {
        Self {
            ids: ids.into_iter().peekable(),
            index,
        }
    }
}

impl Iterator for ReadPlan {
    type Item = Result<PackRead, RepoError>;

    fn next(&mut self) -> Option<Self::Item> {
        let first = self.ids.next()?;
        let Some(location) = self.index.get(&first) else {
            return Some(Err(RepoError::Missing {
                object: format!("chunk {} (in no index)", hex::encode(first)),
            }));
        };
        let mut read = PackRead::starting(first, location);
        while let Some(next) = self.ids.peek() {
            // A chunk missing from the index ends the read; the next call reports it.
            match self.index.get(next) {
                Some(location) if read.can_take(location) => read.push(*next, location),
                _ => break,
            }
            self.ids.next();
        }
        Some(Ok(read))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(pack: &str, offset: u64, length: u32) -> Location {
        Location {
            pack: Arc::from(pack),
            offset,
            length,
            raw_length: length * 2,
        }
    }

    fn plan(chunks: &[([u8; 32], Location)], order: &[usize]) -> Vec<Result<PackRead, RepoError>> {
        let index: Index = chunks.iter().cloned().collect();
        ReadPlan::new(
            order.iter().map(|i| chunks[*i].0).collect(),
            Arc::new(index),
        )
        .collect()
    }

    fn ranges(reads: &[Result<PackRead, RepoError>]) -> Vec<(String, Range<u64>, usize)> {
        reads
            .iter()
            .map(|r| {
                let r = r.as_ref().expect("planned");
                (r.pack.to_string(), r.range.clone(), r.blobs.len())
            })
            .collect()
    }

    #[test]
    fn neighbouring_blobs_of_one_pack_are_fetched_with_one_read() {
        let chunks = [
            ([1; 32], at("a", 0, 100)),
            ([2; 32], at("a", 100, 50)),
            ([3; 32], at("a", 150 + MAX_GAP, 10)),
        ];
        let reads = plan(&chunks, &[0, 1, 2]);
        assert_eq!(ranges(&reads), vec![("a".into(), 0..160 + MAX_GAP, 3)]);
        let read = reads[0].as_ref().expect("planned");
        assert_eq!(read.blobs[1], ([2; 32], 100..150, 100));
        assert_eq!(
            read.blobs[2].1,
            (150 + MAX_GAP) as usize..(160 + MAX_GAP) as usize
        );
    }

    #[test]
    fn another_pack_a_backward_blob_a_wide_gap_or_a_full_read_starts_a_new_read() {
        let chunks = [
            ([1; 32], at("a", 1000, 100)),
            ([2; 32], at("b", 0, 100)),
            ([3; 32], at("b", 0, 100)),
            ([4; 32], at("b", 101 + MAX_GAP, 100)),
            ([5; 32], at("b", MAX_READ, 100)),
        ];
        let reads = plan(&chunks, &[0, 1, 2, 3, 4]);
        assert_eq!(
            ranges(&reads),
            vec![
                ("a".into(), 1000..1100, 1),
                ("b".into(), 0..100, 1),
                ("b".into(), 0..100, 1),
                ("b".into(), 101 + MAX_GAP..201 + MAX_GAP, 1),
                ("b".into(), MAX_READ..MAX_READ + 100, 1),
            ]
        );
    }

    #[test]
    fn a_chunk_in_no_index_is_an_error_at_its_place_in_the_stream() {
        let chunks = [([1; 32], at("a", 0, 100)), ([2; 32], at("a", 100, 100))];
        let index: Index = chunks.iter().cloned().collect();
        let reads: Vec<_> =
            ReadPlan::new(vec![[1; 32], [9; 32], [2; 32]], Arc::new(index)).collect();
        assert_eq!(reads.len(), 3);
        assert_eq!(ranges(&reads[..1]), vec![("a".into(), 0..100, 1)]);
        assert!(matches!(&reads[1], Err(RepoError::Missing { object }) if object.contains("0909")));
        assert_eq!(ranges(&reads[2..]), vec![("a".into(), 100..200, 1)]);
    }

    #[test]
    fn a_location_at_the_end_of_the_address_space_is_planned_without_overflow() {
        let chunks = [
            ([1; 32], at("a", u64::MAX - 10, 100)),
            ([2; 32], at("a", u64::MAX, 100)),
        ];
        let reads = plan(&chunks, &[0, 1]);
        assert_eq!(reads.len(), 1);
        assert_eq!(ranges(&reads)[0].1, u64::MAX - 10..u64::MAX);
    }
}
