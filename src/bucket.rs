//! Sticky bucketing: a user ID always lands in the same bucket, on every proxy,
//! with no shared state. The formula is the contract (and Unleash's gradual
//! rollout): `bucket = murmur3_x86_32(salt + ":" + user_id, seed 0) % buckets + 1`.

use std::io::{Cursor, Read};

/// murmur3 x86 32-bit, seed 0, of `prefix` followed by `user_id`, without
/// building the key in memory.
pub fn hash_key(prefix: &[u8], user_id: &[u8]) -> u32 {
    let mut key = Cursor::new(prefix).chain(Cursor::new(user_id));
    // Reading from in-memory cursors cannot fail; 0 would only misplace one request.
    murmur3::murmur3_32(&mut key, 0).unwrap_or(0)
}

/// The bucket (1..=`buckets`) of a user. `buckets` is never 0 (the config only
/// allows 100, 1000 or 10000); 0 yields bucket 1 rather than a panic.
pub fn bucket_of(prefix: &[u8], user_id: &[u8], buckets: u32) -> u32 {
    hash_key(prefix, user_id)
        .checked_rem(buckets)
        .map_or(1, |b| b + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_murmur3_x86_32_values() {
        // Reference vectors of MurmurHash3_x86_32 with seed 0.
        assert_eq!(hash_key(b"", b""), 0);
        assert_eq!(hash_key(b"", b"hello"), 0x248b_fa47);
        assert_eq!(hash_key(b"", b"hello, world"), 0x149b_bb7f);
        assert_eq!(
            hash_key(b"", b"The quick brown fox jumps over the lazy dog"),
            0x2e4f_f723
        );
    }

    #[test]
    fn the_prefix_is_hashed_as_if_concatenated() {
        for (prefix, id) in [
            (&b"checkout-v2:"[..], &b"user-1"[..]),
            (b"a:", b""),
            (b"", b"abc"),
            (b"abc", b"defgh"),
        ] {
            let joined = [prefix, id].concat();
            assert_eq!(hash_key(prefix, id), hash_key(b"", &joined));
        }
    }

    #[test]
    fn unleash_normalized_values() {
        // Unleash's normalizedHash(userId, groupId, 100) = murmur3("groupId:userId") % 100 + 1;
        // these pairs are the values its client SDKs test against.
        assert_eq!(bucket_of(b"gr1:", b"123", 100), 73);
        assert_eq!(bucket_of(b"groupX:", b"999", 100), 25);
    }

    #[test]
    fn buckets_stay_in_range() {
        for i in 0..10_000u32 {
            let id = format!("user-{i}");
            for buckets in [100, 1000, 10_000] {
                let b = bucket_of(b"", id.as_bytes(), buckets);
                assert!((1..=buckets).contains(&b), "bucket {b} of {buckets}");
            }
        }
        assert_eq!(bucket_of(b"", b"x", 0), 1);
    }
}
