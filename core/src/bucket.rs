//! Sticky bucketing: a user ID always lands in the same bucket, on every proxy,
//! with no shared state. The formula is the contract (and Unleash's gradual
//! rollout): `bucket = murmur3_x86_32(salt + ":" + user_id, seed 0) % buckets + 1`.

/// murmur3 x86 32-bit, seed 0, of `prefix` followed by `user_id`, without
/// building the key in memory. Hand-rolled rather than the `murmur3` crate's
/// `Read`-based API, which costs about four times as much per key; the tests
/// check both agree on every split of many keys.
#[inline]
pub fn hash_key(prefix: &[u8], user_id: &[u8]) -> u32 {
    let mut state = Murmur3::default();
    state.write(prefix);
    state.write(user_id);
    state.finish()
}

const C1: u32 = 0xcc9e_2d51;
const C2: u32 = 0x1b87_3593;

/// Streaming murmur3 x86 32-bit with seed 0: the blocks of the concatenation of
/// everything written, carried across `write` calls.
#[derive(Default)]
struct Murmur3 {
    h: u32,
    /// Bytes of an unfinished block, little-endian, and how many.
    tail: u32,
    tail_len: u32,
    len: u32,
}

#[inline(always)]
fn mix_k(k: u32) -> u32 {
    k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2)
}

impl Murmur3 {
    #[inline(always)]
    fn block(&mut self, k: u32) {
        self.h = (self.h ^ mix_k(k))
            .rotate_left(13)
            .wrapping_mul(5)
            .wrapping_add(0xe654_6b64);
    }

    #[inline(always)]
    fn write(&mut self, mut data: &[u8]) {
        // The key length is taken mod 2^32, as the reference does.
        self.len = self.len.wrapping_add(data.len() as u32);
        while self.tail_len > 0 {
            let Some((&byte, rest)) = data.split_first() else {
                return;
            };
            self.tail |= u32::from(byte) << (8 * self.tail_len);
            self.tail_len += 1;
            data = rest;
            if self.tail_len == 4 {
                let k = self.tail;
                self.block(k);
                self.tail = 0;
                self.tail_len = 0;
            }
        }
        let mut blocks = data.chunks_exact(4);
        for block in &mut blocks {
            self.block(u32::from_le_bytes([block[0], block[1], block[2], block[3]]));
        }
        for (i, &byte) in blocks.remainder().iter().enumerate() {
            self.tail |= u32::from(byte) << (8 * i);
        }
        self.tail_len = blocks.remainder().len() as u32;
    }

    #[inline(always)]
    fn finish(self) -> u32 {
        let mut h = self.h;
        if self.tail_len > 0 {
            h ^= mix_k(self.tail);
        }
        h ^= self.len;
        h ^= h >> 16;
        h = h.wrapping_mul(0x85eb_ca6b);
        h ^= h >> 13;
        h = h.wrapping_mul(0xc2b2_ae35);
        h ^ (h >> 16)
    }
}

/// The bucket (1..=`buckets`) of a user. `buckets` is never 0 (the config only
/// allows 100, 1000 or 10000); 0 yields bucket 1 rather than a panic.
#[inline]
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

    /// The `murmur3` crate as the reference implementation.
    fn reference(key: &[u8]) -> u32 {
        murmur3::murmur3_32(&mut std::io::Cursor::new(key), 0).unwrap()
    }

    #[test]
    fn agrees_with_the_reference_crate_on_every_split_and_length() {
        let bytes: Vec<u8> = (0..200u32)
            .map(|i| (i.wrapping_mul(151) >> 2) as u8)
            .collect();
        for len in 0..=70 {
            let key = &bytes[..len];
            let expected = reference(key);
            for split in 0..=len {
                assert_eq!(
                    hash_key(&key[..split], &key[split..]),
                    expected,
                    "len {len} split {split}"
                );
            }
        }
        for i in 0..5000u32 {
            let id = format!("{i:08x}-5f0c-4a3e-9b1d-{i:012}");
            let key = format!("checkout-v2:{id}");
            assert_eq!(
                hash_key(b"checkout-v2:", id.as_bytes()),
                reference(key.as_bytes())
            );
        }
        let high: Vec<u8> = (0..=255u8).collect();
        assert_eq!(hash_key(&high[..7], &high[7..]), reference(&high));
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
