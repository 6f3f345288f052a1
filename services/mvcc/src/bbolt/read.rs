//! Reading a bbolt file: pick the meta page, then walk the root bucket's
//! tree and each top-level bucket's, checking everything before use.

use std::collections::HashSet;

use sha2::{Digest, Sha256};

use super::page::{
    page_kind, u32_at, u64_at, Meta, MetaFault, PageHeader, BRANCH_PAGE, BUCKET_HEADER_SIZE,
    BUCKET_LEAF, ELEMENT_SIZE, LEAF_PAGE, META_SIZE, PAGE_HEADER_SIZE, PAGE_SIZE,
};
use super::{BboltError, Buckets};

/// One bucket's pairs, as `Buckets` holds them.
type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Length of the trailer `etcdctl snapshot save` appends.
const SHA256_LEN: usize = 32;
/// bbolt's trees split at two or more keys per page, so even a file of
/// 2^64 bytes cannot be this deep; anything deeper is damage.
const MAX_DEPTH: usize = 64;
/// Page sizes to look for meta page 1 at when meta page 0 is unreadable
/// (and so cannot say where page 1 starts), most common first.
const FALLBACK_PAGE_SIZES: [usize; 7] = [PAGE_SIZE, 1024, 2048, 8192, 16384, 32768, 65536];

pub(super) fn read(bytes: &[u8]) -> Result<Buckets, BboltError> {
    let meta = choose_meta(bytes)?;
    let page_size = meta.page_size as usize;
    let data = strip_trailer(bytes, page_size)?;
    let file = File::new(data, page_size, &meta)?;
    file.buckets(meta.root)
}

/// The meta record in the page at `page` of size `page_size`.
fn meta_at(bytes: &[u8], page: u64, page_size: usize) -> Result<Meta, BboltError> {
    let start = (page as usize)
        .checked_mul(page_size)
        .and_then(|s| s.checked_add(PAGE_HEADER_SIZE));
    let raw = start
        .and_then(|s| bytes.get(s..s.checked_add(META_SIZE)?))
        .and_then(|r| <&[u8; META_SIZE]>::try_from(r).ok())
        .ok_or(BboltError::Truncated {
            what: "the meta pages",
            needed: (page + 1) * page_size as u64,
            len: bytes.len() as u64,
        })?;
    let meta = Meta::decode(raw).map_err(|fault| match fault {
        MetaFault::Magic(found) => BboltError::BadMagic { page, found },
        MetaFault::Version(found) => BboltError::BadVersion { page, found },
        MetaFault::Checksum { stored, computed } => BboltError::BadMetaChecksum {
            page,
            stored,
            computed,
        },
    })?;
    let size = meta.page_size;
    if !size.is_power_of_two() || !(512..=1 << 20).contains(&size) {
        return Err(BboltError::BadPageSize { page, size });
    }
    Ok(meta)
}

/// Of the two meta pages, the valid one with the higher txid, as bbolt
/// opens a file: a torn write of one meta leaves the other to fall back on.
fn choose_meta(bytes: &[u8]) -> Result<Meta, BboltError> {
    let first = meta_at(bytes, 0, PAGE_SIZE);
    let second = match &first {
        Ok(meta) => meta_at(bytes, 1, meta.page_size as usize).and_then(|m| {
            if m.page_size == meta.page_size {
                Ok(m)
            } else {
                Err(BboltError::BadPageSize {
                    page: 1,
                    size: m.page_size,
                })
            }
        }),
        Err(_) => {
            // Page 0 cannot say where page 1 is: try the usual sizes, keeping
            // a meta only if it agrees about the size it was found at.
            let mut found = None;
            let mut first_error = None;
            for size in FALLBACK_PAGE_SIZES {
                match meta_at(bytes, 1, size) {
                    Ok(m) if m.page_size as usize == size => {
                        found = Some(m);
                        break;
                    }
                    Ok(m) => {
                        first_error.get_or_insert(BboltError::BadPageSize {
                            page: 1,
                            size: m.page_size,
                        });
                    }
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
            match (found, first_error) {
                (Some(m), _) => Ok(m),
                (None, Some(e)) => Err(e),
                (None, None) => Err(BboltError::Truncated {
                    what: "the meta pages",
                    needed: 2 * PAGE_SIZE as u64,
                    len: bytes.len() as u64,
                }),
            }
        }
    };
    match (first, second) {
        (Ok(a), Ok(b)) => Ok(if b.txid > a.txid { b } else { a }),
        (Ok(a), Err(_)) => Ok(a),
        (Err(_), Ok(b)) => Ok(b),
        (Err(a), Err(b)) => Err(BboltError::NoValidMeta {
            page0: Box::new(a),
            page1: Box::new(b),
        }),
    }
}

/// The database without etcd's SHA-256 trailer, checked, when there is one.
fn strip_trailer(bytes: &[u8], page_size: usize) -> Result<&[u8], BboltError> {
    if bytes.len() % page_size != SHA256_LEN {
        return Ok(bytes);
    }
    let (data, stored) = bytes.split_at(bytes.len() - SHA256_LEN);
    let computed = Sha256::digest(data);
    if computed.as_slice() != stored {
        return Err(BboltError::Sha256Mismatch {
            stored: hex(stored),
            computed: hex(&computed),
        });
    }
    Ok(data)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where a page being read came from, for bounds and error messages.
#[derive(Clone, Copy)]
enum Source<'a> {
    /// A page of the file, by id.
    Page(u64),
    /// A bucket's inline page, embedded in its header's value.
    Inline { bucket: &'a [u8], page: &'a [u8] },
}

/// A page's bytes (header and any overflow pages) and where it came from.
struct Page<'a> {
    bytes: &'a [u8],
    header: PageHeader,
    location: Location<'a>,
}

#[derive(Clone, Copy)]
enum Location<'a> {
    Page(u64),
    Inline(&'a [u8]),
}

impl Location<'_> {
    fn describe(&self) -> String {
        match self {
            Location::Page(id) => format!("page {id}"),
            Location::Inline(bucket) => {
                format!("inline page of bucket \"{}\"", bucket.escape_ascii())
            }
        }
    }
}

/// One element of a leaf page.
struct LeafElement<'a> {
    flags: u32,
    key: &'a [u8],
    value: &'a [u8],
}

impl<'a> Page<'a> {
    fn element_bounds(&self, index: usize) -> Result<usize, BboltError> {
        let at = index
            .checked_mul(ELEMENT_SIZE)
            .and_then(|o| o.checked_add(PAGE_HEADER_SIZE))
            .filter(|&at| {
                at.checked_add(ELEMENT_SIZE)
                    .is_some_and(|e| e <= self.bytes.len())
            });
        at.ok_or_else(|| self.bad_element(index))
    }

    fn bad_element(&self, index: usize) -> BboltError {
        BboltError::BadElementBounds {
            location: self.location.describe(),
            index,
        }
    }

    /// The `len` bytes `pos` bytes past the element at `at`, checked.
    fn slice(&self, index: usize, start: Option<usize>, len: u32) -> Result<&'a [u8], BboltError> {
        start
            .and_then(|s| self.bytes.get(s..s.checked_add(len as usize)?))
            .ok_or_else(|| self.bad_element(index))
    }

    fn leaf_element(&self, index: usize) -> Result<LeafElement<'a>, BboltError> {
        let at = self.element_bounds(index)?;
        let field = |o| u32_at(self.bytes, at + o).ok_or_else(|| self.bad_element(index));
        let (flags, pos, ksize, vsize) = (field(0)?, field(4)?, field(8)?, field(12)?);
        let key_start = at.checked_add(pos as usize);
        let key = self.slice(index, key_start, ksize)?;
        let value_start = key_start.and_then(|s| s.checked_add(ksize as usize));
        let value = self.slice(index, value_start, vsize)?;
        if key.is_empty() {
            return Err(BboltError::EmptyKey {
                location: self.location.describe(),
                index,
            });
        }
        Ok(LeafElement { flags, key, value })
    }

    /// A branch element's child page id (its key is checked, not needed).
    fn branch_child(&self, index: usize) -> Result<u64, BboltError> {
        let at = self.element_bounds(index)?;
        let pos = u32_at(self.bytes, at).ok_or_else(|| self.bad_element(index))?;
        let ksize = u32_at(self.bytes, at + 4).ok_or_else(|| self.bad_element(index))?;
        let child = u64_at(self.bytes, at + 8).ok_or_else(|| self.bad_element(index))?;
        let key = self.slice(index, at.checked_add(pos as usize), ksize)?;
        if key.is_empty() {
            return Err(BboltError::EmptyKey {
                location: self.location.describe(),
                index,
            });
        }
        Ok(child)
    }
}

/// The database's pages, with what has been visited so far.
struct File<'a> {
    data: &'a [u8],
    page_size: usize,
    high_water: u64,
    visited: HashSet<u64>,
}

impl<'a> File<'a> {
    fn new(data: &'a [u8], page_size: usize, meta: &Meta) -> Result<Self, BboltError> {
        let needed = meta.pgid.checked_mul(page_size as u64);
        if needed.is_none_or(|n| n > data.len() as u64) {
            return Err(BboltError::Truncated {
                what: "the meta's page count",
                needed: needed.unwrap_or(u64::MAX),
                len: data.len() as u64,
            });
        }
        Ok(File {
            data,
            page_size,
            high_water: meta.pgid,
            visited: HashSet::new(),
        })
    }

    /// The page `id` with its overflow pages, checked to lie within the
    /// database, to be a branch or leaf page, and to be visited only once.
    fn page(&mut self, id: u64) -> Result<Page<'a>, BboltError> {
        // Pages 0 and 1 are the metas: no tree may point at them.
        let out_of_range = |span| BboltError::PageOutOfRange {
            page: id,
            span,
            high_water: self.high_water,
        };
        if id < 2 || id >= self.high_water {
            return Err(out_of_range(1));
        }
        // Within the high-water mark, which `new` checked fits in the data.
        let start = id as usize * self.page_size;
        let header = self
            .data
            .get(start..)
            .and_then(PageHeader::decode)
            .ok_or_else(|| out_of_range(1))?;
        let span = u64::from(header.overflow) + 1;
        if id + span > self.high_water {
            return Err(out_of_range(span));
        }
        let bytes = self
            .data
            .get(start..start + span as usize * self.page_size)
            .ok_or_else(|| out_of_range(span))?;
        if header.id != id {
            return Err(BboltError::PageIdMismatch {
                page: id,
                found: header.id,
            });
        }
        if header.flags != BRANCH_PAGE && header.flags != LEAF_PAGE {
            return Err(BboltError::UnexpectedPageType {
                page: id,
                kind: page_kind(header.flags),
            });
        }
        if !self.visited.insert(id) {
            return Err(BboltError::Cycle { page: id });
        }
        Ok(Page {
            bytes,
            header,
            location: Location::Page(id),
        })
    }

    /// Calls `visit` on each leaf element of the tree at `source`, in order.
    fn walk(
        &mut self,
        source: Source<'a>,
        depth: usize,
        visit: &mut dyn FnMut(LeafElement<'a>) -> Result<(), BboltError>,
    ) -> Result<(), BboltError> {
        let page = match source {
            Source::Page(id) => {
                if depth > MAX_DEPTH {
                    return Err(BboltError::TooDeep {
                        page: id,
                        max: MAX_DEPTH,
                    });
                }
                self.page(id)?
            }
            Source::Inline { bucket, page } => {
                let header = PageHeader::decode(page).ok_or_else(|| BboltError::BadBucket {
                    bucket: bucket.to_vec(),
                    detail: "its inline page is shorter than a page header".to_owned(),
                })?;
                if header.flags != LEAF_PAGE {
                    return Err(BboltError::BadBucket {
                        bucket: bucket.to_vec(),
                        detail: format!(
                            "its inline page is a {} page, not a leaf",
                            page_kind(header.flags)
                        ),
                    });
                }
                Page {
                    bytes: page,
                    header,
                    location: Location::Inline(bucket),
                }
            }
        };
        let count = usize::from(page.header.count);
        // The whole element array must lie in the page before any is read.
        if count > 0 {
            page.element_bounds(count - 1)?;
        }
        if page.header.flags == LEAF_PAGE {
            for index in 0..count {
                visit(page.leaf_element(index)?)?;
            }
        } else {
            for index in 0..count {
                let child = page.branch_child(index)?;
                self.walk(Source::Page(child), depth + 1, visit)?;
            }
        }
        Ok(())
    }

    /// Every top-level bucket under the root bucket at page `root`.
    fn buckets(mut self, root: u64) -> Result<Buckets, BboltError> {
        let mut headers: Vec<(&'a [u8], &'a [u8])> = Vec::new();
        self.walk(Source::Page(root), 0, &mut |element| {
            if element.flags & BUCKET_LEAF == 0 {
                return Err(BboltError::NotABucket {
                    key: element.key.to_vec(),
                });
            }
            if headers.last().is_some_and(|(last, _)| *last >= element.key) {
                return Err(BboltError::KeysOutOfOrder {
                    bucket: Vec::new(),
                    key: element.key.to_vec(),
                });
            }
            headers.push((element.key, element.value));
            Ok(())
        })?;
        let mut buckets = Buckets::new();
        for (name, value) in headers {
            let pairs = self.bucket(name, value)?;
            buckets.insert(name.to_vec(), pairs);
        }
        Ok(buckets)
    }

    /// The pairs of the bucket `name`, whose header is `value`.
    fn bucket(&mut self, name: &'a [u8], value: &'a [u8]) -> Result<Pairs, BboltError> {
        let bad = |detail: &str| BboltError::BadBucket {
            bucket: name.to_vec(),
            detail: detail.to_owned(),
        };
        let root = u64_at(value, 0)
            .filter(|_| value.len() >= BUCKET_HEADER_SIZE)
            .ok_or_else(|| bad("its header is shorter than 16 bytes"))?;
        let source = if root == 0 {
            // An inline bucket: its single leaf page follows the header.
            let page = value.get(BUCKET_HEADER_SIZE..).unwrap_or_default();
            Source::Inline { bucket: name, page }
        } else {
            Source::Page(root)
        };
        let mut pairs = Pairs::new();
        self.walk(source, 0, &mut |element| {
            if element.flags & BUCKET_LEAF != 0 {
                return Err(BboltError::NestedBucket {
                    bucket: name.to_vec(),
                    nested: element.key.to_vec(),
                });
            }
            if pairs
                .last()
                .is_some_and(|(last, _)| last.as_slice() >= element.key)
            {
                return Err(BboltError::KeysOutOfOrder {
                    bucket: name.to_vec(),
                    key: element.key.to_vec(),
                });
            }
            pairs.push((element.key.to_vec(), element.value.to_vec()));
            Ok(())
        })?;
        Ok(pairs)
    }
}
