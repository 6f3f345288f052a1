//! bbolt database files, as etcd's snapshots are: a reader to import from
//! etcd, and a writer whose output bbolt opens, so that
//! `etcdctl snapshot status` and `etcdctl snapshot restore` accept it.
//!
//! Only what etcd stores is supported: top-level buckets of plain key/value
//! pairs. The reader trusts nothing in the file: every page id, element and
//! length is checked before use, and a damaged file is an error, never a
//! panic.

mod page;
mod read;
mod write;

#[cfg(test)]
mod tests;

use sha2::{Digest, Sha256};

/// Top-level buckets by name, each with its key/value pairs in key order.
/// Nested buckets are not supported on write; on read a nested bucket is an
/// error naming it.
pub type Buckets = std::collections::BTreeMap<Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>>;

/// Why a file is not a bbolt database `read` accepts.
#[derive(Debug, thiserror::Error)]
pub enum BboltError {
    /// The file ends before something it claims to hold.
    #[error("bbolt file is truncated: {what} needs {needed} bytes, the file has {len}")]
    Truncated {
        what: &'static str,
        needed: u64,
        len: u64,
    },
    /// A meta page does not start with bbolt's magic number.
    #[error("bbolt meta page {page} has bad magic {found:#010x} (expected 0xed0cdaed): not a bbolt file")]
    BadMagic { page: u64, found: u32 },
    /// A meta page is of a format version other than 2.
    #[error("bbolt meta page {page} has version {found}, only version 2 is supported")]
    BadVersion { page: u64, found: u32 },
    /// A meta page's FNV-64a checksum does not match its contents.
    #[error("bbolt meta page {page} has a bad checksum: stored {stored:#018x}, computed {computed:#018x}")]
    BadMetaChecksum {
        page: u64,
        stored: u64,
        computed: u64,
    },
    /// A meta page names a page size bbolt would not use.
    #[error("bbolt meta page {page} has an invalid page size {size}")]
    BadPageSize { page: u64, size: u32 },
    /// Neither meta page is valid, so there is no consistent database.
    #[error("bbolt file has no valid meta page: page 0: {page0}; page 1: {page1}")]
    NoValidMeta {
        page0: Box<BboltError>,
        page1: Box<BboltError>,
    },
    /// The trailing SHA-256 (as `etcdctl snapshot save` appends) does not
    /// match the file before it.
    #[error("snapshot's SHA-256 trailer {stored} does not match its contents' {computed}")]
    Sha256Mismatch { stored: String, computed: String },
    /// A page (with its overflow pages) lies beyond the database's end.
    #[error(
        "bbolt page {page} (spanning {span} pages) lies beyond the database's {high_water} pages"
    )]
    PageOutOfRange {
        page: u64,
        span: u64,
        high_water: u64,
    },
    /// A page's header names another page than the one it was reached as.
    #[error("bbolt page {page}'s header says it is page {found}")]
    PageIdMismatch { page: u64, found: u64 },
    /// A bucket's tree reaches a page that is not a branch or leaf page.
    #[error("bbolt page {page} is a {kind} page where a branch or leaf page was expected")]
    UnexpectedPageType { page: u64, kind: String },
    /// A page is reached a second time: the tree has a cycle or shares pages.
    #[error("bbolt page {page} is reached twice (a cycle or a shared page)")]
    Cycle { page: u64 },
    /// A tree deeper than any bbolt could build from a file this size.
    #[error("bbolt tree is deeper than {max} levels at page {page}")]
    TooDeep { page: u64, max: usize },
    /// An element, or the key or value it points at, lies outside its page.
    #[error("bbolt {location}: element {index} lies outside the page")]
    BadElementBounds { location: String, index: usize },
    /// A zero-length key, which bbolt can neither store nor read back.
    #[error("bbolt {location}: element {index} has an empty key")]
    EmptyKey { location: String, index: usize },
    /// Keys not in strictly ascending order within a bucket.
    #[error("bbolt bucket \"{}\": keys are not in ascending order at \"{}\"", .bucket.escape_ascii(), .key.escape_ascii())]
    KeysOutOfOrder { bucket: Vec<u8>, key: Vec<u8> },
    /// A bucket inside a top-level bucket, which etcd never creates.
    #[error("bbolt bucket \"{}\" holds a nested bucket \"{}\", which is not supported", .bucket.escape_ascii(), .nested.escape_ascii())]
    NestedBucket { bucket: Vec<u8>, nested: Vec<u8> },
    /// The root holds a plain key where only buckets can be.
    #[error("bbolt root holds key \"{}\", which is not a bucket", .key.escape_ascii())]
    NotABucket { key: Vec<u8> },
    /// A bucket's header, or its inline page, is malformed.
    #[error("bbolt bucket \"{}\" has a malformed header: {detail}", .bucket.escape_ascii())]
    BadBucket { bucket: Vec<u8>, detail: String },
}

/// Reads a bbolt file (as etcd's snapshots are): checks the meta pages
/// (magic 0xED0CDAED, version 2, FNV-64a checksum) and takes the valid one
/// with the higher txid, as bbolt does, then walks the root bucket and every
/// top-level bucket (inline buckets included), bounds-checking every page id
/// and element. If `bytes.len() % page_size == 32`, the last 32 bytes are a
/// SHA-256 trailer (etcd's snapshot) and must match; otherwise no trailer is
/// expected.
pub fn read(bytes: &[u8]) -> Result<Buckets, BboltError> {
    read::read(bytes)
}

/// Writes a bbolt file holding `buckets` (page size 4096) that bbolt, and so
/// etcd 3.4 and etcdctl, opens: two meta pages, an empty freelist page, and
/// each bucket as a non-inline bucket on leaf and branch pages, large keys
/// and values spilling onto overflow pages. Every page is in use (the
/// freelist is empty), so bbolt's consistency check passes. No SHA-256 trailer:
/// `with_sha256_trailer(file)` appends one.
///
/// Pairs are written in key order whatever order they come in; a repeated
/// key keeps its last value. bbolt cannot hold an empty key or bucket name
/// (it refuses to read one), so those are left out.
pub fn write(buckets: &Buckets) -> Vec<u8> {
    write::write(buckets)
}

/// Appends the SHA-256 of `file` to it, as `etcdctl snapshot save` does.
pub fn with_sha256_trailer(file: Vec<u8>) -> Vec<u8> {
    let digest = Sha256::digest(&file);
    let mut file = file;
    file.extend_from_slice(&digest);
    file
}
