//! A consistent copy of a replica's store as one byte stream: in cairn's
//! format below, what a new replica can start from; in etcd's
//! (`etcd_snapshot`), what etcd's Maintenance.Snapshot sends.
//!
//! A RocksDB checkpoint (hard links to the live files, taken at one point in
//! time, the applied log position included) is framed as:
//! `CAIRNSNAP1\n`, then per file `u16 name length | name | u64 size | bytes`
//! (big-endian), then `u16 0`, then the CRC-32 of everything before it. As in
//! etcd's snapshots, zeros pad that to a multiple of 512 bytes and the SHA-256
//! of it all comes last: etcdctl checks for both before it keeps a snapshot.

use std::fs::File;
use std::io::{Read, Write};
use std::path::PathBuf;

use std::sync::Arc;

use cairn_proto::cairn::mvcc::v1::snapshot_request::Format;
use cairn_proto::cairn::mvcc::v1::SnapshotChunk;
use sha2::Digest;
use tonic::Status;

use crate::error::MvccError;
use crate::store::Store;

const MAGIC: &[u8] = b"CAIRNSNAP1\n";
/// etcd's snapshot body is whole 512-byte pages, followed by its SHA-256.
const PAGE: u64 = 512;
const SHA256_BYTES: u64 = 32;
/// Bytes per chunk a snapshot is read in.
pub(crate) const CHUNK: usize = 64 * 1024;

/// A checkpoint on disk, removed when dropped, and the files to send.
pub(crate) struct Checkpoint {
    dir: PathBuf,
    files: Vec<(String, u64)>,
}

impl Drop for Checkpoint {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), %error, "cannot remove a snapshot checkpoint");
        }
    }
}

impl Checkpoint {
    /// Takes a checkpoint of `store` into `dir`, which must not exist and
    /// should be on the store's filesystem (its files are hard links).
    pub(crate) fn take(store: &Store, dir: PathBuf) -> Result<Self, MvccError> {
        store.checkpoint(&dir)?;
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io_error)? {
            let entry = entry.map_err(io_error)?;
            let metadata = entry.metadata().map_err(io_error)?;
            if metadata.is_file() {
                files.push((
                    entry.file_name().to_string_lossy().into_owned(),
                    metadata.len(),
                ));
            }
        }
        files.sort();
        Ok(Self { dir, files })
    }

    /// Where the checkpoint is.
    pub(crate) fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Bytes up to and including the CRC.
    fn framed_bytes(&self) -> u64 {
        let framing: u64 = self
            .files
            .iter()
            .map(|(name, size)| 2 + name.len() as u64 + 8 + size)
            .sum();
        MAGIC.len() as u64 + framing + 2 + 4
    }

    /// Bytes the whole stream will have.
    pub(crate) fn total_bytes(&self) -> u64 {
        self.framed_bytes().div_ceil(PAGE) * PAGE + SHA256_BYTES
    }

    /// Writes the framed stream to `out`.
    pub(crate) fn write_to(&self, out: &mut impl Write) -> Result<(), MvccError> {
        let mut out = Summing {
            inner: out,
            checksum: sha2::Sha256::default(),
        };
        self.write_framed(&mut out)?;
        let padding = self.framed_bytes().div_ceil(PAGE) * PAGE - self.framed_bytes();
        let zeros = vec![0_u8; usize::try_from(padding).unwrap_or(0)];
        out.write_all(&zeros).map_err(io_error)?;
        let digest = out.checksum.finalize();
        out.inner.write_all(&digest).map_err(io_error)
    }

    fn write_framed(&self, out: &mut impl Write) -> Result<(), MvccError> {
        let mut out = Summing {
            inner: out,
            checksum: crc32fast::Hasher::new(),
        };
        out.write_all(MAGIC).map_err(io_error)?;
        for (name, size) in &self.files {
            let length = u16::try_from(name.len())
                .map_err(|_| MvccError::Snapshot(format!("file name too long: {name}")))?;
            out.write_all(&length.to_be_bytes()).map_err(io_error)?;
            out.write_all(name.as_bytes()).map_err(io_error)?;
            out.write_all(&size.to_be_bytes()).map_err(io_error)?;
            let copied = std::io::copy(
                &mut File::open(self.dir.join(name))
                    .map_err(io_error)?
                    .take(*size),
                &mut out,
            )
            .map_err(io_error)?;
            if copied != *size {
                return Err(MvccError::Snapshot(format!(
                    "{name} shrank while being sent ({copied} of {size} bytes)"
                )));
            }
        }
        out.write_all(&0_u16.to_be_bytes()).map_err(io_error)?;
        let crc = out.checksum.finalize();
        out.inner.write_all(&crc.to_be_bytes()).map_err(io_error)
    }
}

/// Unpacks a whole snapshot stream into `dir` (created; it must not hold a
/// store), so a replica can open it: a replica that seeds itself from a peer
/// must refuse a copy that was cut short or damaged on the way. The framing's
/// CRC, the zero padding, the SHA-256 of everything before it and the end of
/// the stream right after it are all checked; every file is synced. On an
/// error `dir` holds an unusable partial copy for the caller to remove.
pub(crate) fn unpack(input: &mut impl Read, dir: &std::path::Path) -> Result<(), MvccError> {
    let mut summed = Sha256Reader {
        inner: input,
        digest: sha2::Sha256::default(),
        read: 0,
    };
    unpack_framed(&mut summed, dir)?;
    let padding = summed.read.div_ceil(PAGE) * PAGE - summed.read;
    let mut zeros = Vec::new();
    (&mut summed)
        .take(padding)
        .read_to_end(&mut zeros)
        .map_err(read_error)?;
    if zeros.len() as u64 != padding {
        return Err(truncated());
    }
    if zeros.iter().any(|byte| *byte != 0) {
        return Err(MvccError::Snapshot("the padding is not zeros".into()));
    }
    let expected = summed.digest.finalize();
    let mut digest = [0; SHA256_BYTES as usize];
    summed.inner.read_exact(&mut digest).map_err(read_error)?;
    if digest.as_slice() != expected.as_slice() {
        return Err(MvccError::Snapshot("SHA-256 mismatch".into()));
    }
    let mut more = [0; 1];
    if summed.inner.read(&mut more).map_err(read_error)? != 0 {
        return Err(MvccError::Snapshot(
            "bytes follow the SHA-256 trailer".into(),
        ));
    }
    let synced = File::open(dir).and_then(|dir| dir.sync_all());
    synced.map_err(io_error)
}

/// The files of a framed stream, up to and including its CRC.
fn unpack_framed(input: &mut impl Read, dir: &std::path::Path) -> Result<(), MvccError> {
    let corrupt = |what: &str| MvccError::Snapshot(what.to_owned());
    std::fs::create_dir_all(dir).map_err(io_error)?;
    let mut input = Crc32Reader::new(input);
    let mut magic = vec![0; MAGIC.len()];
    input.read_exact(&mut magic).map_err(read_error)?;
    if magic != MAGIC {
        return Err(corrupt("not a cairn snapshot"));
    }
    let mut names = std::collections::BTreeSet::new();
    loop {
        let mut length = [0; 2];
        input.read_exact(&mut length).map_err(read_error)?;
        let length = usize::from(u16::from_be_bytes(length));
        if length == 0 {
            break;
        }
        let mut name = vec![0; length];
        input.read_exact(&mut name).map_err(read_error)?;
        let name = String::from_utf8(name).map_err(|_| corrupt("a file name is not UTF-8"))?;
        if name.contains('/') || name.contains('\\') || name == ".." || name == "." {
            return Err(corrupt("a file name leaves the directory"));
        }
        if !names.insert(name.clone()) {
            return Err(corrupt("a file comes twice"));
        }
        let mut size = [0; 8];
        input.read_exact(&mut size).map_err(read_error)?;
        let size = u64::from_be_bytes(size);
        let mut file = File::create(dir.join(&name)).map_err(io_error)?;
        let copied = std::io::copy(&mut (&mut input).take(size), &mut file).map_err(read_error)?;
        if copied != size {
            return Err(truncated());
        }
        file.sync_all().map_err(io_error)?;
    }
    let expected = input.crc();
    let mut crc = [0; 4];
    input
        .into_inner()
        .read_exact(&mut crc)
        .map_err(read_error)?;
    if u32::from_be_bytes(crc) != expected {
        return Err(corrupt("checksum mismatch"));
    }
    Ok(())
}

fn truncated() -> MvccError {
    MvccError::Snapshot("the stream ended early (truncated)".into())
}

/// A failed read: the end of the stream where more was due is a truncated
/// copy; anything else (the sender's error included) says itself.
fn read_error(error: std::io::Error) -> MvccError {
    if error.kind() == std::io::ErrorKind::UnexpectedEof {
        truncated()
    } else {
        io_error(error)
    }
}

/// Passes reads on from `inner`, feeding each byte read to a SHA-256 and
/// counting them.
struct Sha256Reader<R> {
    inner: R,
    digest: sha2::Sha256,
    read: u64,
}

impl<R: Read> Read for Sha256Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.digest.update(&buf[..read]);
        self.read += read as u64;
        Ok(read)
    }
}

fn io_error(error: std::io::Error) -> MvccError {
    MvccError::Snapshot(error.to_string())
}

/// What a writer can feed what it writes to: a CRC or a digest.
trait Checksum {
    fn add(&mut self, bytes: &[u8]);
}

impl Checksum for crc32fast::Hasher {
    fn add(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

impl Checksum for sha2::Sha256 {
    fn add(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

/// Passes writes on to `inner`, feeding each byte written to `checksum`.
struct Summing<W, C> {
    inner: W,
    checksum: C,
}

impl<W: Write, C: Checksum> Write for Summing<W, C> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.checksum.add(&buf[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Passes reads on from `inner`, feeding each byte read to a CRC-32.
struct Crc32Reader<R> {
    inner: R,
    hasher: crc32fast::Hasher,
}

impl<R: Read> Crc32Reader<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: crc32fast::Hasher::new(),
        }
    }

    fn crc(&self) -> u32 {
        self.hasher.clone().finalize()
    }

    fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Read for Crc32Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.hasher.update(&buf[..read]);
        Ok(read)
    }
}

/// A new directory for a checkpoint of `store`, beside it (on its
/// filesystem, so the checkpoint's files are hard links).
pub(crate) fn checkpoint_dir(store: &Store) -> PathBuf {
    let name = store.dir().file_name().map_or_else(
        || "store".into(),
        |name| name.to_string_lossy().into_owned(),
    );
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or_default();
    store
        .dir()
        .with_file_name(format!("{name}.snapshot-{nanos}"))
}

/// The snapshot of `store` as the chunks Mvcc/Snapshot streams, in
/// `format`: cairn's, a checkpoint framed and read on a blocking thread and
/// sent as it fills; or etcd's, the bbolt file `etcd_snapshot` maps the
/// store to, built whole in memory first (about twice the store's live
/// data, since bbolt pages are laid out from the whole set of buckets) so
/// that `remaining_bytes` is right from the first chunk. A receiver that
/// goes away ends the copy.
pub(crate) fn stream(
    store: Arc<Store>,
    format: Format,
) -> tokio_stream::wrappers::ReceiverStream<Result<SnapshotChunk, Status>> {
    let (chunks, received) = tokio::sync::mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let sent = match format {
            Format::Cairn => {
                Checkpoint::take(&store, checkpoint_dir(&store)).and_then(|checkpoint| {
                    let mut sender = ChunkSender::new(chunks.clone(), checkpoint.total_bytes());
                    checkpoint.write_to(&mut sender)?;
                    sender.finish()
                })
            }
            Format::Etcd => crate::etcd_snapshot::export_file(&store).and_then(|file| {
                let mut sender = ChunkSender::new(chunks.clone(), file.len() as u64);
                sender.write_all(&file).map_err(io_error)?;
                sender.finish()
            }),
        };
        if let Err(error) = sent {
            let _ = chunks.blocking_send(Err(Status::from(error)));
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(received)
}

/// Cuts the snapshot stream into chunks and sends them as they fill.
struct ChunkSender {
    chunks: tokio::sync::mpsc::Sender<Result<SnapshotChunk, Status>>,
    buffer: Vec<u8>,
    remaining: u64,
}

impl ChunkSender {
    fn new(chunks: tokio::sync::mpsc::Sender<Result<SnapshotChunk, Status>>, total: u64) -> Self {
        Self {
            chunks,
            buffer: Vec::with_capacity(CHUNK),
            remaining: total,
        }
    }

    fn send(&mut self) -> std::io::Result<()> {
        let blob = std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK));
        self.remaining = self.remaining.saturating_sub(blob.len() as u64);
        self.chunks
            .blocking_send(Ok(SnapshotChunk {
                blob,
                remaining_bytes: self.remaining,
            }))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
    }

    fn finish(mut self) -> Result<(), MvccError> {
        if !self.buffer.is_empty() {
            self.send()
                .map_err(|error| MvccError::Snapshot(error.to_string()))?;
        }
        Ok(())
    }
}

impl Write for ChunkSender {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let room = CHUNK - self.buffer.len();
        let taken = room.min(bytes.len());
        self.buffer.extend_from_slice(&bytes[..taken]);
        if self.buffer.len() == CHUNK {
            self.send()?;
        }
        Ok(taken)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use cairn_proto::cairn::mvcc::v1::command::Op;
    use cairn_proto::cairn::mvcc::v1::Command;
    use cairn_proto::etcdserverpb::PutRequest;
    use prost::Message;

    use super::*;
    use crate::store::LogEntry;

    fn put(store: &Store, index: u64, key: &str) -> Result<(), MvccError> {
        let command = Command {
            origin: 1,
            sequence: index,
            op: Some(Op::Put(PutRequest {
                key: key.as_bytes().to_vec(),
                value: vec![b'v'; 300],
                ..Default::default()
            })),
            ..Default::default()
        };
        store.apply(&[LogEntry {
            index,
            term: 1,
            commands: vec![command.encode_to_vec().into()],
        }])?;
        Ok(())
    }

    #[test]
    fn a_snapshot_unpacks_into_a_store_with_the_same_state() -> Result<(), MvccError> {
        let dir = tempfile::tempdir().map_err(io_error)?;
        let store = Store::open(&dir.path().join("store"))?;
        for index in 1..=50 {
            put(&store, index, &format!("key-{}", index % 7))?;
        }
        let checkpoint = Checkpoint::take(&store, dir.path().join("checkpoint"))?;
        let mut bytes = Vec::new();
        checkpoint.write_to(&mut bytes)?;
        assert_eq!(bytes.len() as u64, checkpoint.total_bytes());
        // etcdctl keeps a snapshot only if it is pages plus a SHA-256 of them.
        assert_eq!(bytes.len() as u64 % PAGE, SHA256_BYTES);
        let (body, digest) = bytes.split_at(bytes.len() - SHA256_BYTES as usize);
        assert_eq!(sha2::Sha256::digest(body).as_slice(), digest);
        drop(checkpoint);
        assert!(!dir.path().join("checkpoint").exists());

        let restored_dir = dir.path().join("restored");
        unpack(&mut bytes.as_slice(), &restored_dir)?;
        let restored = Store::open(&restored_dir)?;
        assert_eq!(restored.status(), store.status());
        assert_eq!(restored.hash_kv(0)?, store.hash_kv(0)?);

        let mut damaged = bytes.clone();
        let middle = damaged.len() / 2;
        damaged[middle] ^= 0xff;
        assert!(unpack(&mut damaged.as_slice(), &dir.path().join("damaged")).is_err());
        Ok(())
    }

    /// A store of a few keys, and its snapshot's bytes.
    fn snapshot_bytes(dir: &std::path::Path) -> Result<Vec<u8>, MvccError> {
        let store = Store::open(&dir.join("store"))?;
        for index in 1..=20 {
            put(&store, index, &format!("key-{index}"))?;
        }
        let checkpoint = Checkpoint::take(&store, dir.join("checkpoint"))?;
        let mut bytes = Vec::new();
        checkpoint.write_to(&mut bytes)?;
        Ok(bytes)
    }

    #[test]
    fn a_truncated_snapshot_is_refused_wherever_it_was_cut() -> Result<(), MvccError> {
        let dir = tempfile::tempdir().map_err(io_error)?;
        let bytes = snapshot_bytes(dir.path())?;
        // Inside the magic, inside a file, inside the padding, inside the trailer,
        // and with only the trailer missing.
        for keep in [
            5,
            bytes.len() / 3,
            bytes.len() - SHA256_BYTES as usize - 1,
            bytes.len() - 5,
            bytes.len() - SHA256_BYTES as usize,
        ] {
            let target = dir.path().join(format!("cut-{keep}"));
            let refused = unpack(&mut &bytes[..keep], &target)
                .expect_err("a truncated snapshot must be refused");
            assert!(
                refused.to_string().contains("truncated"),
                "cut at {keep}: {refused}"
            );
        }
        Ok(())
    }

    #[test]
    fn a_snapshot_damaged_past_its_crc_or_followed_by_more_bytes_is_refused(
    ) -> Result<(), MvccError> {
        let dir = tempfile::tempdir().map_err(io_error)?;
        let bytes = snapshot_bytes(dir.path())?;
        let mut trailer = bytes.clone();
        let last = trailer.len() - 1;
        trailer[last] ^= 1;
        let refused = unpack(&mut trailer.as_slice(), &dir.path().join("trailer"))
            .expect_err("a wrong SHA-256 must be refused");
        assert!(refused.to_string().contains("SHA-256"), "{refused}");

        let mut padding = bytes.clone();
        let in_padding = padding.len() - SHA256_BYTES as usize - 1;
        padding[in_padding] = 7;
        assert!(unpack(&mut padding.as_slice(), &dir.path().join("padding")).is_err());

        let mut longer = bytes.clone();
        longer.push(0);
        let refused = unpack(&mut longer.as_slice(), &dir.path().join("longer"))
            .expect_err("bytes after the trailer must be refused");
        assert!(refused.to_string().contains("follow"), "{refused}");

        unpack(&mut bytes.as_slice(), &dir.path().join("whole"))?;
        Ok(())
    }
}
