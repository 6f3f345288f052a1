//! Writing a bbolt file: metas at pages 0 and 1, an empty freelist at 2,
//! then each bucket's tree bottom-up (so a parent knows its children's page
//! ids), and the root bucket's tree last.

use super::page::{
    Meta, PageHeader, BRANCH_PAGE, BUCKET_HEADER_SIZE, BUCKET_LEAF, ELEMENT_SIZE, FREELIST_PAGE,
    LEAF_PAGE, META_PAGE, PAGE_HEADER_SIZE, PAGE_SIZE,
};
use super::Buckets;

/// The page the (empty) freelist is written to.
const FREELIST_PGID: u64 = 2;
/// The first page a tree may use, after the metas and the freelist.
const FIRST_DATA_PGID: u64 = 3;

pub(super) fn write(buckets: &Buckets) -> Vec<u8> {
    let mut file = Writer {
        buf: vec![0; FIRST_DATA_PGID as usize * PAGE_SIZE],
        next: FIRST_DATA_PGID,
    };
    let mut headers: Vec<(&[u8], [u8; BUCKET_HEADER_SIZE])> = Vec::new();
    for (name, pairs) in buckets {
        if name.is_empty() {
            continue;
        }
        let items = sorted_items(pairs);
        let root = file.tree(&items);
        let mut header = [0u8; BUCKET_HEADER_SIZE];
        header[..8].copy_from_slice(&root.to_le_bytes());
        headers.push((name, header));
    }
    let root_items: Vec<Item<'_>> = headers
        .iter()
        .map(|(name, header)| Item {
            flags: BUCKET_LEAF,
            key: name,
            value: header,
        })
        .collect();
    let root = file.tree(&root_items);

    let freelist = PageHeader {
        id: FREELIST_PGID,
        flags: FREELIST_PAGE,
        count: 0,
        overflow: 0,
    };
    file.put(FREELIST_PGID, &freelist.encode());
    // Both metas describe the same database, so either alone opens it.
    for txid in 0..2u64 {
        let meta = Meta {
            page_size: PAGE_SIZE as u32,
            flags: 0,
            root,
            root_sequence: 0,
            freelist: FREELIST_PGID,
            pgid: file.next,
            txid,
        };
        let header = PageHeader {
            id: txid,
            flags: META_PAGE,
            count: 0,
            overflow: 0,
        };
        let mut page = header.encode().to_vec();
        page.extend_from_slice(&meta.encode());
        file.put(txid, &page);
    }
    file.buf
}

/// A bucket's pairs in strictly ascending key order, the last of any
/// repeated key kept, empty keys (which bbolt cannot read) left out.
fn sorted_items(pairs: &[(Vec<u8>, Vec<u8>)]) -> Vec<Item<'_>> {
    let mut items: Vec<Item<'_>> = pairs
        .iter()
        .filter(|(key, _)| !key.is_empty())
        .map(|(key, value)| Item {
            flags: 0,
            key,
            value,
        })
        .collect();
    // Stable, so among equal keys the later pair stays later.
    items.sort_by(|a, b| a.key.cmp(b.key));
    let mut deduped: Vec<Item<'_>> = Vec::with_capacity(items.len());
    for item in items {
        match deduped.last_mut() {
            Some(last) if last.key == item.key => *last = item,
            _ => deduped.push(item),
        }
    }
    deduped
}

/// A leaf element to be written.
#[derive(Clone, Copy)]
struct Item<'a> {
    flags: u32,
    key: &'a [u8],
    value: &'a [u8],
}

/// A child page and the first key under it, which bbolt expects as the
/// branch element's key (it finds a child's element by that key on update).
#[derive(Clone, Copy)]
struct Child<'a> {
    key: &'a [u8],
    pgid: u64,
}

/// The file so far, and the next unused page id.
struct Writer {
    buf: Vec<u8>,
    next: u64,
}

impl Writer {
    /// Writes `bytes` at the start of the (already allocated) page `pgid`.
    fn put(&mut self, pgid: u64, bytes: &[u8]) {
        let start = pgid as usize * PAGE_SIZE;
        self.buf[start..start + bytes.len()].copy_from_slice(bytes);
    }

    /// Appends a page (with overflow pages if `elements` and `data` need
    /// them) and returns its id.
    fn page(&mut self, flags: u16, count: usize, elements: &[u8], data: &[u8]) -> u64 {
        let len = PAGE_HEADER_SIZE + elements.len() + data.len();
        let span = len.div_ceil(PAGE_SIZE).max(1);
        let id = self.next;
        let header = PageHeader {
            id,
            flags,
            // Pages are filled to at most a page's worth of elements (or one
            // oversized element), far below u16::MAX.
            count: count as u16,
            overflow: (span - 1) as u32,
        };
        let start = self.buf.len();
        self.buf.extend_from_slice(&header.encode());
        self.buf.extend_from_slice(elements);
        self.buf.extend_from_slice(data);
        self.buf.resize(start + span * PAGE_SIZE, 0);
        self.next += span as u64;
        id
    }

    /// Writes a leaf page holding `items`.
    fn leaf(&mut self, items: &[Item<'_>]) -> u64 {
        let mut elements = Vec::with_capacity(items.len() * ELEMENT_SIZE);
        let mut data = Vec::new();
        for (i, item) in items.iter().enumerate() {
            // An element's pos counts from the element itself.
            let element_at = PAGE_HEADER_SIZE + i * ELEMENT_SIZE;
            let data_at = PAGE_HEADER_SIZE + items.len() * ELEMENT_SIZE + data.len();
            elements.extend_from_slice(&item.flags.to_le_bytes());
            elements.extend_from_slice(&((data_at - element_at) as u32).to_le_bytes());
            elements.extend_from_slice(&(item.key.len() as u32).to_le_bytes());
            elements.extend_from_slice(&(item.value.len() as u32).to_le_bytes());
            data.extend_from_slice(item.key);
            data.extend_from_slice(item.value);
        }
        self.page(LEAF_PAGE, items.len(), &elements, &data)
    }

    /// Writes a branch page pointing at `children`.
    fn branch(&mut self, children: &[Child<'_>]) -> u64 {
        let mut elements = Vec::with_capacity(children.len() * ELEMENT_SIZE);
        let mut data = Vec::new();
        for (i, child) in children.iter().enumerate() {
            let element_at = PAGE_HEADER_SIZE + i * ELEMENT_SIZE;
            let data_at = PAGE_HEADER_SIZE + children.len() * ELEMENT_SIZE + data.len();
            elements.extend_from_slice(&((data_at - element_at) as u32).to_le_bytes());
            elements.extend_from_slice(&(child.key.len() as u32).to_le_bytes());
            elements.extend_from_slice(&child.pgid.to_le_bytes());
            data.extend_from_slice(child.key);
        }
        self.page(BRANCH_PAGE, children.len(), &elements, &data)
    }

    /// Writes a B+tree holding `items` (sorted) and returns its root page:
    /// leaves filled to a page each, then levels of branches until one page
    /// covers them all.
    fn tree(&mut self, items: &[Item<'_>]) -> u64 {
        if items.is_empty() {
            return self.leaf(&[]);
        }
        let mut level: Vec<Child<'_>> = Vec::new();
        for group in fill(items, 1, |item| item.key.len() + item.value.len()) {
            level.push(Child {
                key: group[0].key,
                pgid: self.leaf(group),
            });
        }
        while level.len() > 1 {
            let mut parents = Vec::new();
            for group in fill(&level, 2, |child| child.key.len()) {
                parents.push(Child {
                    key: group[0].key,
                    pgid: self.branch(group),
                });
            }
            level = parents;
        }
        level[0].pgid
    }
}

/// Splits `elements` into runs that each fit one page (header, elements and
/// their data) unless a run needs `min_run` elements to reach that far, in
/// which case the page gets overflow pages. Branches need two per page, or
/// two oversized keys would make a level of as many pages as the one below,
/// forever.
fn fill<T>(elements: &[T], min_run: usize, data_len: impl Fn(&T) -> usize) -> Vec<&[T]> {
    let mut runs = Vec::new();
    let mut start = 0;
    let mut used = PAGE_HEADER_SIZE;
    for (i, element) in elements.iter().enumerate() {
        let size = ELEMENT_SIZE + data_len(element);
        if i >= start + min_run && used + size > PAGE_SIZE {
            runs.push(&elements[start..i]);
            start = i;
            used = PAGE_HEADER_SIZE;
        }
        used += size;
    }
    runs.push(&elements[start..]);
    runs
}
