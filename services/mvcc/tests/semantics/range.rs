//! Range reads, because clients page and sort with them and rely on etcd's
//! exact key bounds, limits, counts, sort orders and filters.

use crate::harness::{everything, kv_values, names, revision_of, Kv};
use cairn_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use cairn_proto::etcdserverpb::RangeRequest;

#[test]
fn prefix_and_from_key_ranges() {
    let mut kv = Kv::new();
    for key in ["a", "ab", "abc", "b", "c", "\u{7f}"] {
        kv.put(key, "v");
    }
    let cases: [(&str, &str, &str, Vec<&str>); 8] = [
        ("one key", "ab", "", vec!["ab"]),
        ("one missing key", "aa", "", vec![]),
        ("the prefix ab", "ab", "ac", vec!["ab", "abc"]),
        ("[a, b)", "a", "b", vec!["a", "ab", "abc"]),
        (
            "from ab on",
            "ab",
            "\0",
            vec!["ab", "abc", "b", "c", "\u{7f}"],
        ),
        (
            "every key",
            "\0",
            "\0",
            vec!["a", "ab", "abc", "b", "c", "\u{7f}"],
        ),
        ("an end before the key", "c", "a", vec![]),
        ("an end equal to the key", "b", "b", vec![]),
    ];
    for (name, key, range_end, expected) in cases {
        assert_eq!(kv.keys(key, range_end, 0), expected, "{name}");
    }
}

#[test]
fn limit_with_more_and_count() {
    let mut kv = Kv::new();
    for key in ["a", "b", "c", "d", "e"] {
        kv.put(key, "value"); // 2..=6
    }
    kv.delete("e", ""); // 7
    let with = |limit: i64, revision: i64| RangeRequest {
        limit,
        revision,
        ..everything()
    };
    // (limit, revision, keys, more, count)
    let cases: [(i64, i64, Vec<&str>, bool, i64); 7] = [
        (2, 0, vec!["a", "b"], true, 4),
        (3, 0, vec!["a", "b", "c"], true, 4),
        (4, 0, vec!["a", "b", "c", "d"], false, 4),
        (9, 0, vec!["a", "b", "c", "d"], false, 4),
        (0, 0, vec!["a", "b", "c", "d"], false, 4),
        (4, 6, vec!["a", "b", "c", "d"], true, 5),
        (2, 4, vec!["a", "b"], true, 3),
    ];
    for (limit, revision, keys, more, count) in cases {
        let response = kv.read(&with(limit, revision));
        assert_eq!(
            (names(&response.kvs), response.more, response.count),
            (keys.into_iter().map(String::from).collect(), more, count),
            "limit {limit} at {revision}"
        );
    }
    let counted = kv.read(&RangeRequest {
        count_only: true,
        limit: 1,
        ..everything()
    });
    assert!(counted.kvs.is_empty());
    assert_eq!((counted.count, counted.more), (4, false));
    let keys_only = kv.read(&RangeRequest {
        keys_only: true,
        ..everything()
    });
    assert_eq!(names(&keys_only.kvs), vec!["a", "b", "c", "d"]);
    assert!(keys_only.kvs.iter().all(|kv| kv.value.is_empty()));
    assert!(keys_only.kvs.iter().all(|kv| kv.version == 1));
}

/// b=2@2, a=3@3, c=1@4, a=3@5, d=2@6:
///
/// | key | value | create | mod | version |
/// |-----|-------|--------|-----|---------|
/// | a   | 3     | 3      | 5   | 2       |
/// | b   | 2     | 2      | 2   | 1       |
/// | c   | 1     | 4      | 4   | 1       |
/// | d   | 2     | 6      | 6   | 1       |
fn sorting_store() -> Kv {
    let mut kv = Kv::new();
    for (key, value) in [("b", "2"), ("a", "3"), ("c", "1"), ("a", "3"), ("d", "2")] {
        kv.put(key, value);
    }
    kv
}

#[test]
fn sort_orders() {
    let kv = sorting_store();
    use SortOrder::{Ascend, Descend, None as Unsorted};
    use SortTarget::{Create, Key, Mod, Value, Version};
    // Ties keep ascending key order, and DESCEND reverses the whole ascending
    // result (ties included). etcd itself makes no promise about ties.
    let cases = [
        (Key, Unsorted, "abcd"),
        (Key, Ascend, "abcd"),
        (Key, Descend, "dcba"),
        (Version, Unsorted, "bcda"),
        (Version, Ascend, "bcda"),
        (Version, Descend, "adcb"),
        (Create, Unsorted, "bacd"),
        (Create, Ascend, "bacd"),
        (Create, Descend, "dcab"),
        (Mod, Unsorted, "bcad"),
        (Mod, Ascend, "bcad"),
        (Mod, Descend, "dacb"),
        (Value, Unsorted, "cbda"),
        (Value, Ascend, "cbda"),
        (Value, Descend, "adbc"),
    ];
    for (target, order, expected) in cases {
        let response = kv.read(&RangeRequest {
            sort_target: target as i32,
            sort_order: order as i32,
            ..everything()
        });
        assert_eq!(
            names(&response.kvs).concat(),
            expected,
            "{target:?} {order:?}"
        );
        assert_eq!(response.count, 4);

        let limited = kv.read(&RangeRequest {
            sort_target: target as i32,
            sort_order: order as i32,
            limit: 2,
            ..everything()
        });
        if order != Unsorted {
            assert_eq!(
                names(&limited.kvs).concat(),
                expected[..2],
                "{target:?} {order:?} limit 2: sorted, then cut"
            );
        }
        assert!(limited.more);
        assert_eq!(limited.count, 4);
    }
}

#[test]
fn a_sort_target_without_an_order_sorts_only_the_first_limit_plus_one_keys() {
    // etcd fetches limit + 1 keys in key order unless a sort order or a
    // filter is given, and only then sorts by the target: with VALUE and no
    // order, limit 1 sorts a=3 and b=2 and answers b, not c=1.
    let kv = sorting_store();
    let request = |order: SortOrder| RangeRequest {
        sort_target: SortTarget::Value as i32,
        sort_order: order as i32,
        limit: 1,
        ..everything()
    };
    let unordered = kv.read(&request(SortOrder::None));
    assert_eq!(names(&unordered.kvs), vec!["b"]);
    assert!(unordered.more);
    let ascending = kv.read(&request(SortOrder::Ascend));
    assert_eq!(names(&ascending.kvs), vec!["c"]);
    assert_eq!((ascending.more, ascending.count), (true, 4));
}

#[test]
fn min_max_filters_do_not_change_count() {
    let kv = sorting_store();
    let filtered = |min_mod, max_mod, min_create, max_create, limit| RangeRequest {
        min_mod_revision: min_mod,
        max_mod_revision: max_mod,
        min_create_revision: min_create,
        max_create_revision: max_create,
        limit,
        ..everything()
    };
    // (request, keys, more)
    let cases = [
        (filtered(4, 0, 0, 0, 0), "acd", false),
        (filtered(0, 4, 0, 0, 0), "bc", false),
        (filtered(0, 0, 3, 0, 0), "acd", false),
        (filtered(0, 0, 0, 3, 0), "ab", false),
        (filtered(3, 5, 3, 4, 0), "ac", false),
        (filtered(7, 0, 0, 0, 0), "", false),
        (filtered(4, 0, 0, 0, 1), "a", true),
        (filtered(4, 0, 0, 0, 3), "acd", false),
        (filtered(6, 0, 0, 0, 1), "d", false),
    ];
    for (request, expected, more) in cases {
        let response = kv.read(&request);
        assert_eq!(names(&response.kvs).concat(), expected, "{request:?}");
        assert_eq!(response.more, more, "{request:?}");
        assert_eq!(response.count, 4, "count ignores filters: {request:?}");
    }
}

#[test]
fn header_revision_is_current_on_a_historical_read() {
    let mut kv = Kv::new();
    kv.put("a", "1"); // 2
    kv.put("a", "2"); // 3
    kv.put("b", "1"); // 4
    for revision in [0, 1, 2, 3, 4] {
        let response = kv.read(&RangeRequest {
            revision,
            ..everything()
        });
        assert_eq!(revision_of(response.header.as_ref()), 4, "at {revision}");
    }
    let then = kv.read(&RangeRequest {
        revision: 2,
        ..everything()
    });
    assert_eq!(kv_values(&then.kvs), vec![("a".into(), "1".into())]);
    assert_eq!(then.count, 1);
    assert!(kv
        .read(&RangeRequest {
            revision: 1,
            ..everything()
        })
        .kvs
        .is_empty());
}
