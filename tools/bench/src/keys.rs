//! Keys of 8 bytes, as etcd's own benchmark writes them (`--key-size 8`): a
//! letter naming the workload, then digits. Each workload keeps to its own
//! letter, so one never reads or overwrites another's keys and a range over
//! one letter finds exactly that workload's keys.

/// Bytes in every key.
pub(crate) const KEY_BYTES: usize = 8;
/// Digits after the letter.
const DIGITS: usize = KEY_BYTES - 1;
/// Indexes wrap past this many keys per letter.
const SPACE: u64 = 10_u64.pow(DIGITS as u32);

/// The key spaces, one letter per workload.
pub(crate) mod space {
    /// Keys each putting client cycles through.
    pub(crate) const PUT: u8 = b'p';
    /// The one key every client of the hot-key workload writes.
    pub(crate) const HOT: u8 = b'h';
    /// Keys the compare-and-swap clients contend on.
    pub(crate) const CAS: u8 = b'c';
    /// The preloaded keys every read finds.
    pub(crate) const READ: u8 = b'r';
}

/// Key number `index` of a space, e.g. `key(b'r', 42)` is `r0000042`.
pub(crate) fn key(space: u8, index: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(KEY_BYTES);
    key.push(space);
    key.extend_from_slice(format!("{:0DIGITS$}", index % SPACE).as_bytes());
    key
}

/// The end of the range holding every key that starts with `prefix`
/// (etcd's `--prefix`): the prefix with its last byte raised by one.
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff (or empty): every key from the prefix on, as etcd spells it.
    vec![0]
}

/// A well-spread hash of two numbers (splitmix64), so clients that advance
/// in lockstep still pick keys that collide now and then, not always or never.
pub(crate) fn spread(a: u64, b: u64) -> u64 {
    let mut z = a
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(b)
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_eight_bytes_and_sort_by_index() {
        assert_eq!(key(space::READ, 42), b"r0000042".to_vec());
        assert_eq!(key(space::PUT, SPACE + 3), b"p0000003".to_vec());
        assert!(key(space::READ, 9) < key(space::READ, 10));
        for index in [0, 1, 9_999, SPACE - 1] {
            assert_eq!(key(space::HOT, index).len(), KEY_BYTES);
        }
    }

    #[test]
    fn a_prefix_range_holds_its_keys_and_no_others() {
        let end = prefix_end(b"r");
        assert_eq!(end, b"s".to_vec());
        assert!(key(space::READ, SPACE - 1) < end);
        assert!(key(space::PUT, 0) < b"r".to_vec());
        assert_eq!(prefix_end(&[b'a', 0xff]), b"b".to_vec());
        assert_eq!(prefix_end(&[0xff]), vec![0]);
    }

    #[test]
    fn spread_keys_cover_the_pool() {
        let mut seen = [false; 100];
        for sequence in 0..2_000 {
            seen[(spread(7, sequence) % 100) as usize] = true;
        }
        assert!(seen.iter().all(|hit| *hit));
    }
}
