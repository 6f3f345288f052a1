//! etcd's revision: `main` counts store changes (one per Put, per effective
//! DeleteRange, per Txn that writes); `sub` orders the writes inside one change.

/// A point in the store's history. Ordered by `main`, then `sub`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision {
    pub main: i64,
    pub sub: i64,
}

impl Revision {
    /// The revision `main`, write `sub` within it.
    pub const fn new(main: i64, sub: i64) -> Self {
        Self { main, sub }
    }

    /// The 16-byte big-endian key of this revision, so that byte order is
    /// revision order (the layout of the revision index on disk).
    pub fn to_key(self) -> [u8; 16] {
        let mut key = [0; 16];
        key[..8].copy_from_slice(&self.main.to_be_bytes());
        key[8..].copy_from_slice(&self.sub.to_be_bytes());
        key
    }

    /// Reads a key written by [`Revision::to_key`].
    pub fn from_key(key: &[u8]) -> Option<Self> {
        let main = i64::from_be_bytes(key.get(..8)?.try_into().ok()?);
        let sub = i64::from_be_bytes(key.get(8..16)?.try_into().ok()?);
        Some(Self { main, sub })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_order_is_revision_order() {
        let revisions = [
            Revision::new(1, 0),
            Revision::new(1, 1),
            Revision::new(2, 0),
            Revision::new(256, 0),
            Revision::new(256, 3),
        ];
        for pair in revisions.windows(2) {
            assert!(pair[0] < pair[1]);
            assert!(pair[0].to_key() < pair[1].to_key());
        }
        for revision in revisions {
            assert_eq!(Revision::from_key(&revision.to_key()), Some(revision));
        }
        assert_eq!(Revision::from_key(&[0; 15]), None);
    }
}
