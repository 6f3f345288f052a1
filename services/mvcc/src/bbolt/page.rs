//! The on-disk layout of a bbolt file, as etcd 3.4's bbolt writes it on a
//! little-endian machine: fixed-size pages, each starting with a 16-byte
//! header, the first two holding the meta records.

/// What every bbolt meta record starts with.
pub(super) const MAGIC: u32 = 0xED0C_DAED;
/// The only file format version bbolt has ever written.
pub(super) const VERSION: u32 = 2;
/// The page size `write` uses: etcd's on x86-64 and arm64 Linux.
pub(super) const PAGE_SIZE: usize = 4096;

/// Page header: id (u64), flags (u16), element count (u16), overflow (u32).
pub(super) const PAGE_HEADER_SIZE: usize = 16;
/// Both element kinds are 16 bytes: leaf (flags, pos, ksize, vsize as u32),
/// branch (pos, ksize as u32, child page id as u64).
pub(super) const ELEMENT_SIZE: usize = 16;
/// A bucket's header inside its parent's value: root page id, sequence.
pub(super) const BUCKET_HEADER_SIZE: usize = 16;
/// The meta record, from magic to checksum inclusive.
pub(super) const META_SIZE: usize = 64;
/// The checksum covers the meta record up to (not including) itself.
const META_CHECKSUMMED: usize = 56;

pub(super) const BRANCH_PAGE: u16 = 0x01;
pub(super) const LEAF_PAGE: u16 = 0x02;
pub(super) const META_PAGE: u16 = 0x04;
pub(super) const FREELIST_PAGE: u16 = 0x10;
/// A leaf element's flag marking its value as a bucket header.
pub(super) const BUCKET_LEAF: u32 = 0x01;

/// A meta record: which page holds the root bucket and how far the file's
/// pages reach, as of transaction `txid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Meta {
    pub(super) page_size: u32,
    pub(super) flags: u32,
    pub(super) root: u64,
    pub(super) root_sequence: u64,
    pub(super) freelist: u64,
    /// The high-water mark: the number of pages the database spans.
    pub(super) pgid: u64,
    pub(super) txid: u64,
}

/// FNV-1a, 64-bit: bbolt's meta checksum.
pub(super) fn fnv64a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Reads a little-endian u16 at `at`, or None past the end.
pub(super) fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    let raw = bytes.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes(raw.try_into().ok()?))
}

/// Reads a little-endian u32 at `at`, or None past the end.
pub(super) fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let raw = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(raw.try_into().ok()?))
}

/// Reads a little-endian u64 at `at`, or None past the end.
pub(super) fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    let raw = bytes.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(raw.try_into().ok()?))
}

/// How a meta record fails to be one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MetaFault {
    Magic(u32),
    Version(u32),
    Checksum { stored: u64, computed: u64 },
}

impl Meta {
    /// Decodes the 64-byte meta record `raw`, checking magic, version and
    /// checksum (a stored checksum of zero is refused: bbolt has written one
    /// since its first release, and accepting zero would let a zeroed record
    /// pass).
    pub(super) fn decode(raw: &[u8; META_SIZE]) -> Result<Meta, MetaFault> {
        // The record is exactly META_SIZE bytes, so these reads are in range.
        let u32_field = |at| u32_at(raw, at).unwrap_or_default();
        let u64_field = |at| u64_at(raw, at).unwrap_or_default();
        let magic = u32_field(0);
        if magic != MAGIC {
            return Err(MetaFault::Magic(magic));
        }
        let version = u32_field(4);
        if version != VERSION {
            return Err(MetaFault::Version(version));
        }
        let stored = u64_field(META_CHECKSUMMED);
        let computed = fnv64a(&raw[..META_CHECKSUMMED]);
        if stored != computed {
            return Err(MetaFault::Checksum { stored, computed });
        }
        Ok(Meta {
            page_size: u32_field(8),
            flags: u32_field(12),
            root: u64_field(16),
            root_sequence: u64_field(24),
            freelist: u64_field(32),
            pgid: u64_field(40),
            txid: u64_field(48),
        })
    }

    /// The 64-byte record, checksum included.
    pub(super) fn encode(&self) -> [u8; META_SIZE] {
        let mut raw = [0u8; META_SIZE];
        raw[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        raw[4..8].copy_from_slice(&VERSION.to_le_bytes());
        raw[8..12].copy_from_slice(&self.page_size.to_le_bytes());
        raw[12..16].copy_from_slice(&self.flags.to_le_bytes());
        raw[16..24].copy_from_slice(&self.root.to_le_bytes());
        raw[24..32].copy_from_slice(&self.root_sequence.to_le_bytes());
        raw[32..40].copy_from_slice(&self.freelist.to_le_bytes());
        raw[40..48].copy_from_slice(&self.pgid.to_le_bytes());
        raw[48..56].copy_from_slice(&self.txid.to_le_bytes());
        let sum = fnv64a(&raw[..META_CHECKSUMMED]);
        raw[56..64].copy_from_slice(&sum.to_le_bytes());
        raw
    }
}

/// A page header's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PageHeader {
    pub(super) id: u64,
    pub(super) flags: u16,
    pub(super) count: u16,
    pub(super) overflow: u32,
}

impl PageHeader {
    /// Decodes the header at the start of `page`, or None if it is shorter.
    pub(super) fn decode(page: &[u8]) -> Option<PageHeader> {
        Some(PageHeader {
            id: u64_at(page, 0)?,
            flags: u16_at(page, 8)?,
            count: u16_at(page, 10)?,
            overflow: u32_at(page, 12)?,
        })
    }

    pub(super) fn encode(&self) -> [u8; PAGE_HEADER_SIZE] {
        let mut raw = [0u8; PAGE_HEADER_SIZE];
        raw[0..8].copy_from_slice(&self.id.to_le_bytes());
        raw[8..10].copy_from_slice(&self.flags.to_le_bytes());
        raw[10..12].copy_from_slice(&self.count.to_le_bytes());
        raw[12..16].copy_from_slice(&self.overflow.to_le_bytes());
        raw
    }
}

/// A short name for a page's flags, for error messages.
pub(super) fn page_kind(flags: u16) -> String {
    match flags {
        BRANCH_PAGE => "branch".to_owned(),
        LEAF_PAGE => "leaf".to_owned(),
        META_PAGE => "meta".to_owned(),
        FREELIST_PAGE => "freelist".to_owned(),
        other => format!("unknown (flags {other:#06x})"),
    }
}
