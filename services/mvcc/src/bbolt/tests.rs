use super::page::{
    u32_at, u64_at, Meta, PageHeader, BRANCH_PAGE, BUCKET_LEAF, LEAF_PAGE, META_SIZE,
    PAGE_HEADER_SIZE, PAGE_SIZE,
};
use super::{read, with_sha256_trailer, write, BboltError, Buckets};

fn bucket(pairs: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>) -> Vec<(Vec<u8>, Vec<u8>)> {
    pairs.into_iter().collect()
}

fn thousands_of_keys(n: usize) -> Buckets {
    let mut buckets = Buckets::new();
    buckets.insert(
        b"key".to_vec(),
        bucket((0..n).map(|i| {
            (
                format!("{i:016x}").into_bytes(),
                format!("value of key number {i}").into_bytes(),
            )
        })),
    );
    buckets.insert(b"meta".to_vec(), bucket([(b"k".to_vec(), b"v".to_vec())]));
    buckets
}

fn round_trip(buckets: &Buckets) {
    let file = write(buckets);
    assert_eq!(file.len() % PAGE_SIZE, 0);
    assert_eq!(&read(&file).expect("reads its own file"), buckets);
    let trailed = with_sha256_trailer(file);
    assert_eq!(trailed.len() % PAGE_SIZE, 32);
    assert_eq!(&read(&trailed).expect("reads with a trailer"), buckets);
}

fn header(file: &[u8], pgid: u64) -> PageHeader {
    PageHeader::decode(&file[pgid as usize * PAGE_SIZE..]).expect("a page header")
}

fn meta(file: &[u8], page: usize) -> Meta {
    let at = page * PAGE_SIZE + PAGE_HEADER_SIZE;
    let raw: &[u8; META_SIZE] = file[at..at + META_SIZE].try_into().expect("64 bytes");
    Meta::decode(raw).expect("a valid meta")
}

fn set_meta(file: &mut [u8], page: usize, meta: &Meta) {
    let at = page * PAGE_SIZE + PAGE_HEADER_SIZE;
    file[at..at + META_SIZE].copy_from_slice(&meta.encode());
}

/// Rewrites both metas with `change` applied (checksums recomputed).
fn edit_metas(file: &mut [u8], change: impl Fn(&mut Meta)) {
    for page in 0..2 {
        let mut m = meta(file, page);
        change(&mut m);
        set_meta(file, page, &m);
    }
}

/// The root page of the bucket `name`, read off the root bucket's leaf.
fn bucket_root(file: &[u8], name: &[u8]) -> u64 {
    let root = meta(file, 1).root;
    let page = &file[root as usize * PAGE_SIZE..];
    assert_eq!(header(file, root).flags, LEAF_PAGE);
    for i in 0..usize::from(header(file, root).count) {
        let at = PAGE_HEADER_SIZE + 16 * i;
        let pos = u32_at(page, at + 4).expect("in range") as usize;
        let ksize = u32_at(page, at + 8).expect("in range") as usize;
        if &page[at + pos..at + pos + ksize] == name {
            return u64_at(page, at + pos + ksize).expect("in range");
        }
    }
    panic!("no bucket {name:?}");
}

/// A leaf page of `elements` (flags, key, value), as bbolt lays one out.
fn leaf_page(id: u64, elements: &[(u32, &[u8], &[u8])]) -> Vec<u8> {
    let mut page = PageHeader {
        id,
        flags: LEAF_PAGE,
        count: elements.len() as u16,
        overflow: 0,
    }
    .encode()
    .to_vec();
    let mut data = Vec::new();
    let first_data = PAGE_HEADER_SIZE + 16 * elements.len();
    for (i, (flags, key, value)) in elements.iter().enumerate() {
        let pos = first_data + data.len() - (PAGE_HEADER_SIZE + 16 * i);
        for field in [*flags, pos as u32, key.len() as u32, value.len() as u32] {
            page.extend_from_slice(&field.to_le_bytes());
        }
        data.extend_from_slice(key);
        data.extend_from_slice(value);
    }
    page.extend_from_slice(&data);
    page
}

#[test]
fn an_empty_database_round_trips() {
    let file = write(&Buckets::new());
    assert_eq!(
        file.len(),
        4 * PAGE_SIZE,
        "two metas, a freelist and a root leaf"
    );
    round_trip(&Buckets::new());
}

#[test]
fn one_bucket_round_trips() {
    let mut buckets = Buckets::new();
    buckets.insert(
        b"key".to_vec(),
        bucket([
            (vec![0, 255], b"binary".to_vec()),
            (b"a".to_vec(), b"1".to_vec()),
            (b"b".to_vec(), Vec::new()),
        ]),
    );
    round_trip(&buckets);
}

#[test]
fn an_empty_bucket_round_trips() {
    let mut buckets = Buckets::new();
    buckets.insert(b"alarm".to_vec(), Vec::new());
    buckets.insert(b"key".to_vec(), bucket([(b"a".to_vec(), b"1".to_vec())]));
    round_trip(&buckets);
}

#[test]
fn many_buckets_round_trip_with_the_root_bucket_on_branch_pages() {
    let mut buckets = Buckets::new();
    for b in 0..400 {
        let name = format!("bucket-{b:04}-with-a-longish-name").into_bytes();
        let pairs = (0..b % 7).map(|i| (format!("k{i}").into_bytes(), vec![b as u8; i]));
        buckets.insert(name, bucket(pairs));
    }
    let file = write(&buckets);
    assert_eq!(header(&file, meta(&file, 0).root).flags, BRANCH_PAGE);
    round_trip(&buckets);
}

#[test]
fn thousands_of_keys_round_trip_on_more_than_one_level_of_branch_pages() {
    let buckets = thousands_of_keys(30_000);
    let file = write(&buckets);
    let root = bucket_root(&file, b"key");
    assert_eq!(header(&file, root).flags, BRANCH_PAGE);
    // The root's first child is itself a branch: at least three levels.
    let child = u64_at(&file, root as usize * PAGE_SIZE + PAGE_HEADER_SIZE + 8).expect("in range");
    assert_eq!(header(&file, child).flags, BRANCH_PAGE);
    round_trip(&buckets);
}

#[test]
fn large_values_round_trip_on_overflow_pages() {
    let big = |n: usize, seed: u8| {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(seed))
            .collect::<Vec<u8>>()
    };
    let mut buckets = Buckets::new();
    buckets.insert(
        b"key".to_vec(),
        bucket([
            (b"a".to_vec(), b"small".to_vec()),
            (b"b".to_vec(), big(1536 * 1024, 7)),
            (b"c".to_vec(), big(100 * 1024, 13)),
            (b"d".to_vec(), big(4000, 17)),
            (b"e".to_vec(), b"small again".to_vec()),
            (vec![b'f'; 5000], big(10, 3)),
            (vec![b'g'; 20_000], big(10, 5)),
            (vec![b'h'; 20_000], big(10, 9)),
            (vec![b'i'; 32_768], Vec::new()),
        ]),
    );
    let file = write(&buckets);
    let mut pgid = 3;
    let mut overflowed = 0;
    while (pgid as usize) < file.len() / PAGE_SIZE {
        let h = header(&file, pgid);
        overflowed += usize::from(h.overflow > 0);
        pgid += u64::from(h.overflow) + 1;
    }
    assert!(overflowed >= 3, "{overflowed} pages with overflow");
    round_trip(&buckets);
}

#[test]
fn pairs_out_of_order_are_written_sorted_and_a_repeated_key_keeps_its_last_value() {
    let mut buckets = Buckets::new();
    buckets.insert(
        b"key".to_vec(),
        bucket([
            (b"b".to_vec(), b"1".to_vec()),
            (b"a".to_vec(), b"2".to_vec()),
            (b"b".to_vec(), b"3".to_vec()),
            (Vec::new(), b"empty keys cannot be stored".to_vec()),
        ]),
    );
    buckets.insert(Vec::new(), bucket([(b"x".to_vec(), b"y".to_vec())]));
    let read_back = read(&write(&buckets)).expect("reads");
    let mut expected = Buckets::new();
    expected.insert(
        b"key".to_vec(),
        bucket([
            (b"a".to_vec(), b"2".to_vec()),
            (b"b".to_vec(), b"3".to_vec()),
        ]),
    );
    assert_eq!(read_back, expected);
}

#[test]
fn an_inline_bucket_is_read() {
    let inline_page = leaf_page(0, &[(0, b"k1", b"v1"), (0, b"k2", b"")]);
    let mut value = vec![0u8; 16];
    value[8..16].copy_from_slice(&42u64.to_le_bytes()); // sequence, ignored
    value.extend_from_slice(&inline_page);
    let mut file = write(&Buckets::new());
    let root = meta(&file, 1).root;
    let page = leaf_page(root, &[(BUCKET_LEAF, b"auth", &value)]);
    let at = root as usize * PAGE_SIZE;
    file[at..at + page.len()].copy_from_slice(&page);
    let mut expected = Buckets::new();
    expected.insert(
        b"auth".to_vec(),
        bucket([
            (b"k1".to_vec(), b"v1".to_vec()),
            (b"k2".to_vec(), Vec::new()),
        ]),
    );
    assert_eq!(read(&file).expect("reads"), expected);
}

#[test]
fn a_nested_bucket_is_refused_naming_it() {
    let mut buckets = Buckets::new();
    buckets.insert(b"key".to_vec(), bucket([(b"inner".to_vec(), vec![0; 16])]));
    let mut file = write(&buckets);
    let leaf = bucket_root(&file, b"key") as usize * PAGE_SIZE;
    file[leaf + PAGE_HEADER_SIZE..leaf + PAGE_HEADER_SIZE + 4]
        .copy_from_slice(&BUCKET_LEAF.to_le_bytes());
    let err = read(&file).expect_err("refused");
    assert!(
        matches!(&err, BboltError::NestedBucket { bucket, nested } if bucket == b"key" && nested == b"inner"),
        "{err}"
    );
    assert!(err.to_string().contains("\"inner\""), "{err}");
}

#[test]
fn a_truncated_file_is_refused() {
    let file = write(&thousands_of_keys(2000));
    for len in [
        0,
        10,
        100,
        PAGE_SIZE + 20,
        2 * PAGE_SIZE,
        file.len() - PAGE_SIZE,
        file.len() - 1,
    ] {
        let err = read(&file[..len]).expect_err("refused");
        let truncated = |e: &BboltError| matches!(e, BboltError::Truncated { .. });
        let ok = match &err {
            BboltError::NoValidMeta { page0, page1 } => truncated(page0) || truncated(page1),
            e => truncated(e),
        };
        assert!(ok, "length {len}: {err}");
    }
}

#[test]
fn a_flipped_byte_in_one_meta_page_falls_back_to_the_other() {
    let buckets = thousands_of_keys(100);
    for page in 0..2 {
        let mut file = write(&buckets);
        file[page * PAGE_SIZE + PAGE_HEADER_SIZE + 20] ^= 0x40;
        assert_eq!(read(&file).expect("the other meta"), buckets);
    }
}

#[test]
fn a_flipped_byte_in_both_meta_pages_is_refused_as_a_bad_checksum() {
    let mut file = write(&thousands_of_keys(100));
    file[PAGE_HEADER_SIZE + 20] ^= 0x01;
    file[PAGE_SIZE + PAGE_HEADER_SIZE + 44] ^= 0x80;
    let err = read(&file).expect_err("refused");
    match &err {
        BboltError::NoValidMeta { page0, page1 } => {
            assert!(
                matches!(**page0, BboltError::BadMetaChecksum { page: 0, .. }),
                "{err}"
            );
            assert!(
                matches!(**page1, BboltError::BadMetaChecksum { page: 1, .. }),
                "{err}"
            );
        }
        other => panic!("unexpected {other}"),
    }
    assert!(err.to_string().contains("bad checksum"), "{err}");
}

#[test]
fn the_valid_meta_with_the_higher_txid_is_used() {
    let buckets = thousands_of_keys(10);
    let mut file = write(&buckets);
    let mut broken = meta(&file, 1);
    broken.root = 1; // a meta page: not a tree
    set_meta(&mut file, 1, &broken);
    assert!(matches!(
        read(&file),
        Err(BboltError::PageOutOfRange { page: 1, .. })
    ));
    let mut newer = meta(&file, 0);
    newer.txid = 2;
    set_meta(&mut file, 0, &newer);
    assert_eq!(read(&file).expect("meta 0 is newer"), buckets);
}

#[test]
fn a_page_id_beyond_the_file_is_refused() {
    let mut file = write(&thousands_of_keys(10));
    edit_metas(&mut file, |m| m.root = 1_000_000);
    let err = read(&file).expect_err("refused");
    assert!(
        matches!(
            err,
            BboltError::PageOutOfRange {
                page: 1_000_000,
                ..
            }
        ),
        "{err}"
    );

    // A bucket's root beyond the file, and one within it but past the meta's
    // high-water mark.
    for beyond in [u64::MAX, 7] {
        let mut buckets = Buckets::new();
        buckets.insert(b"key".to_vec(), bucket([(b"a".to_vec(), b"1".to_vec())]));
        let mut file = write(&buckets);
        file.extend_from_slice(&[0; 8 * PAGE_SIZE]);
        let root = meta(&file, 0).root as usize * PAGE_SIZE;
        let at = root + PAGE_HEADER_SIZE;
        let value = at + u32_at(&file, at + 4).expect("in range") as usize + 3;
        file[value..value + 8].copy_from_slice(&beyond.to_le_bytes());
        let err = read(&file).expect_err("refused");
        assert!(
            matches!(err, BboltError::PageOutOfRange { page, .. } if page == beyond),
            "{err}"
        );
    }
}

#[test]
fn an_overflow_beyond_the_file_is_refused() {
    let mut buckets = Buckets::new();
    buckets.insert(b"key".to_vec(), bucket([(b"a".to_vec(), vec![1; 20_000])]));
    let mut file = write(&buckets);
    let leaf = bucket_root(&file, b"key") as usize * PAGE_SIZE;
    file[leaf + 12..leaf + 16].copy_from_slice(&1000u32.to_le_bytes());
    let err = read(&file).expect_err("refused");
    assert!(
        matches!(err, BboltError::PageOutOfRange { span: 1001, .. }),
        "{err}"
    );
}

#[test]
fn a_branch_pointing_at_itself_is_refused_as_a_cycle() {
    let mut file = write(&thousands_of_keys(2000));
    let root = bucket_root(&file, b"key");
    let first_child = root as usize * PAGE_SIZE + PAGE_HEADER_SIZE + 8;
    file[first_child..first_child + 8].copy_from_slice(&root.to_le_bytes());
    let err = read(&file).expect_err("refused");
    assert!(
        matches!(err, BboltError::Cycle { page } if page == root),
        "{err}"
    );
}

#[test]
fn an_element_outside_its_page_is_refused() {
    let mut buckets = Buckets::new();
    buckets.insert(b"key".to_vec(), bucket([(b"a".to_vec(), b"1".to_vec())]));
    let file = write(&buckets);
    let leaf = bucket_root(&file, b"key") as usize * PAGE_SIZE;
    for (offset, value) in [(4, 5000u32), (12, u32::MAX), (8, 4096)] {
        let mut file = file.clone();
        let at = leaf + PAGE_HEADER_SIZE + offset;
        file[at..at + 4].copy_from_slice(&value.to_le_bytes());
        let err = read(&file).expect_err("refused");
        assert!(
            matches!(err, BboltError::BadElementBounds { index: 0, .. }),
            "{err}"
        );
    }
    let mut file = file.clone();
    file[leaf + 10..leaf + 12].copy_from_slice(&300u16.to_le_bytes());
    assert!(matches!(
        read(&file),
        Err(BboltError::BadElementBounds { .. })
    ));
}

#[test]
fn a_wrong_sha256_trailer_is_refused() {
    let mut file = with_sha256_trailer(write(&thousands_of_keys(10)));
    let last = file.len() - 1;
    file[last] ^= 1;
    let err = read(&file).expect_err("refused");
    assert!(matches!(err, BboltError::Sha256Mismatch { .. }), "{err}");
    let mut file = with_sha256_trailer(write(&thousands_of_keys(10)));
    file[5 * PAGE_SIZE] ^= 1;
    assert!(matches!(
        read(&file),
        Err(BboltError::Sha256Mismatch { .. })
    ));
}

/// A small deterministic generator, so failures reproduce.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn random_bytes_are_refused_as_not_bbolt() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for len in [0, 1, 64, 4096, 8192, 3 * 4096 + 32, 40_000] {
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let err = read(&bytes).expect_err("refused");
        assert!(
            matches!(
                &err,
                BboltError::NoValidMeta { .. } | BboltError::Truncated { .. }
            ),
            "{err}"
        );
    }
    let err = read(&[0x55; 3 * PAGE_SIZE]).expect_err("refused");
    assert!(err.to_string().contains("bad magic"), "{err}");
}

#[test]
fn mutated_valid_files_never_panic() {
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    let mut many = Buckets::new();
    for b in 0..40 {
        let pairs = (0..b * 3).map(|i| (format!("k{i:04}").into_bytes(), vec![b as u8; i % 50]));
        many.insert(format!("b{b}").into_bytes(), bucket(pairs));
    }
    let mut large = thousands_of_keys(3000);
    large.insert(b"big".to_vec(), bucket([(b"x".to_vec(), vec![7; 50_000])]));
    let files = [
        write(&many),
        write(&large),
        with_sha256_trailer(write(&many)),
    ];
    let mut refused = 0;
    for round in 0..3000 {
        let mut file = files[round % files.len()].clone();
        match rng.below(4) {
            // Truncate anywhere.
            0 => file.truncate(rng.below(file.len() + 1)),
            // Flip bits in page headers and element arrays, where the
            // structure lives.
            1 | 2 => {
                for _ in 0..1 + rng.below(4) {
                    let page = rng.below(file.len() / PAGE_SIZE);
                    let at = page * PAGE_SIZE + rng.below(PAGE_HEADER_SIZE + 16 * 8);
                    file[at] ^= 1 << rng.below(8);
                }
            }
            // Overwrite random bytes anywhere with random values.
            _ => {
                for _ in 0..1 + rng.below(16) {
                    let at = rng.below(file.len());
                    file[at] = rng.next() as u8;
                }
            }
        }
        // Fix the metas' checksums half the time, so damage to them gets
        // past the checksum and into the tree walk.
        if rng.below(2) == 0 && file.len() >= 2 * PAGE_SIZE {
            for page in 0..2 {
                let at = page * PAGE_SIZE + PAGE_HEADER_SIZE;
                let sum = super::page::fnv64a(&file[at..at + 56]);
                file[at + 56..at + 64].copy_from_slice(&sum.to_le_bytes());
            }
        }
        refused += usize::from(read(&file).is_err());
    }
    assert!(refused > 1000, "only {refused} of 3000 mutations refused");
}
