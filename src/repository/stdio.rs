//! Standard input and output for `rewind repo put|cat`: each on a thread of its own, in
//! large blocks, without the extra copy tokio's stdio makes of every block.

use std::io::{Read, Write};

use bytes::Bytes;
use tokio::sync::mpsc;

/// Bytes read from standard input at a time.
const BLOCK: usize = 2 * 1024 * 1024;
/// Blocks read ahead of the consumer (and so the buffers in use at most, plus one).
const AHEAD: usize = 2;

/// Standard input as blocks read ahead on their own thread; buffers are given back and
/// reused, so a long input costs no fresh memory per block.
pub struct StdinBlocks {
    blocks: mpsc::Receiver<std::io::Result<Vec<u8>>>,
    spare: std::sync::mpsc::SyncSender<Vec<u8>>,
}

impl StdinBlocks {
    /// Starts the reading thread.
    pub fn start() -> Self {
        let (to_consumer, blocks) = mpsc::channel(AHEAD);
        let (spare, spares) = std::sync::mpsc::sync_channel::<Vec<u8>>(AHEAD + 1);
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin().lock();
            loop {
                let mut block = spares.try_recv().unwrap_or_default();
                block.resize(BLOCK, 0);
                let filled = match fill(&mut stdin, &mut block) {
                    Ok(0) => break,
                    Ok(filled) => filled,
                    Err(err) => {
                        let _ = to_consumer.blocking_send(Err(err));
                        break;
                    }
                };
                block.truncate(filled);
                if to_consumer.blocking_send(Ok(block)).is_err() {
                    break;
                }
            }
        });
        Self { blocks, spare }
    }

    /// The next block; `None` at the end of the input.
    pub async fn next(&mut self) -> Option<std::io::Result<Vec<u8>>> {
        self.blocks.recv().await
    }

    /// Gives a block's buffer back for reuse.
    pub fn recycle(&self, block: Vec<u8>) {
        let _ = self.spare.try_send(block);
    }
}

/// Reads until `block` is full or the input ends; returns the bytes read.
fn fill(input: &mut impl Read, block: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < block.len() {
        match input.read(&mut block[filled..]) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(filled)
}

/// Standard output written on its own thread, a whole chunk per write.
pub struct StdoutChunks {
    chunks: mpsc::Sender<Bytes>,
    writer: std::thread::JoinHandle<std::io::Result<()>>,
}

impl StdoutChunks {
    /// Starts the writing thread.
    pub fn start() -> Self {
        let (chunks, mut received) = mpsc::channel::<Bytes>(16);
        let writer = std::thread::spawn(move || {
            let mut stdout = std::io::stdout().lock();
            while let Some(chunk) = received.blocking_recv() {
                stdout.write_all(&chunk)?;
            }
            stdout.flush()
        });
        Self { chunks, writer }
    }

    /// Queues a chunk; fails when writing has failed (e.g. a closed pipe).
    pub async fn write(&self, chunk: Bytes) -> std::io::Result<()> {
        self.chunks
            .send(chunk)
            .await
            .map_err(|_| std::io::Error::other("standard output stopped accepting data"))
    }

    /// Waits until everything queued is written.
    pub async fn finish(self) -> std::io::Result<()> {
        let Self { chunks, writer } = self;
        drop(chunks);
        tokio::task::spawn_blocking(move || writer.join())
            .await
            .map_err(std::io::Error::other)?
            .map_err(|_| std::io::Error::other("the standard output thread failed"))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_reads_across_short_reads_until_the_block_is_full_or_the_input_ends() {
        struct Trickle(Vec<u8>);
        impl Read for Trickle {
            fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
                let n = out.len().min(3).min(self.0.len());
                out[..n].copy_from_slice(&self.0[..n]);
                self.0.drain(..n);
                Ok(n)
            }
        }
        let mut input = Trickle((0u8..10).collect());
        let mut block = [0u8; 8];
        assert_eq!(fill(&mut input, &mut block).expect("reads"), 8);
        assert_eq!(block, [0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(fill(&mut input, &mut block).expect("reads"), 2);
        assert_eq!(fill(&mut input, &mut block).expect("reads"), 0);
    }
}
