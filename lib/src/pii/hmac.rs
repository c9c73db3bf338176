//! HMAC-SHA256 (RFC 2104) on top of `sha2`, written out by hand so no MAC
//! crate is needed.
//!
//! The key is absorbed once: the inner and outer SHA-256 states after the
//! padded key block are kept, and each message only clones them. The raw key
//! bytes are not kept.

use sha2::{Digest, Sha256};

/// SHA-256 block size in bytes.
const BLOCK: usize = 64;

/// A keyed HMAC-SHA256. `Debug` never shows key material.
#[derive(Clone)]
pub(crate) struct HmacSha256 {
    /// SHA-256 state after `K0 xor ipad`.
    inner: Sha256,
    /// SHA-256 state after `K0 xor opad`.
    outer: Sha256,
}

impl HmacSha256 {
    /// Prepares the MAC for `key` (any length; keys longer than a block are
    /// hashed first, as RFC 2104 says).
    pub(crate) fn new(key: &[u8]) -> Self {
        let mut k0 = [0u8; BLOCK];
        if key.len() > BLOCK {
            k0[..32].copy_from_slice(Sha256::digest(key).as_slice());
        } else {
            k0[..key.len()].copy_from_slice(key);
        }
        let mut ipad = [0x36u8; BLOCK];
        let mut opad = [0x5cu8; BLOCK];
        for ((i, o), k) in ipad.iter_mut().zip(opad.iter_mut()).zip(k0.iter()) {
            *i ^= k;
            *o ^= k;
        }
        let mut inner = Sha256::new();
        inner.update(ipad);
        let mut outer = Sha256::new();
        outer.update(opad);
        // Best effort: do not leave key-derived blocks on the stack.
        k0.fill(0);
        ipad.fill(0);
        opad.fill(0);
        Self { inner, outer }
    }

    /// `HMAC(K, message)`.
    pub(crate) fn mac(&self, message: &[u8]) -> [u8; 32] {
        let mut inner = self.inner.clone();
        inner.update(message);
        let mut outer = self.outer.clone();
        outer.update(inner.finalize());
        outer.finalize().into()
    }

    /// `HMAC(K, message)` as 64 lowercase hex digits, written into `out`.
    pub(crate) fn mac_hex<'a>(&self, message: &[u8], out: &'a mut [u8; 64]) -> &'a str {
        hex_into(&self.mac(message), out)
    }
}

impl std::fmt::Debug for HmacSha256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HmacSha256(<redacted>)")
    }
}

/// Lowercase hex of a 32-byte digest, without allocating.
pub(crate) fn hex_into<'a>(bytes: &[u8; 32], out: &'a mut [u8; 64]) -> &'a str {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0x0f)];
    }
    std::str::from_utf8(out).expect("hex digits are ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8; 32]) -> String {
        let mut buf = [0u8; 64];
        hex_into(bytes, &mut buf).to_owned()
    }

    #[test]
    fn rfc4231_test_case_1() {
        let key = [0x0bu8; 20];
        let mac = HmacSha256::new(&key).mac(b"Hi There");
        assert_eq!(hex(&mac), "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
    }

    #[test]
    fn rfc4231_test_case_2() {
        let mac = HmacSha256::new(b"Jefe").mac(b"what do ya want for nothing?");
        assert_eq!(hex(&mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[test]
    fn rfc4231_test_case_6_key_longer_than_block() {
        let key = [0xaau8; 131];
        let mac = HmacSha256::new(&key).mac(b"Test Using Larger Than Block-Size Key - Hash Key First");
        assert_eq!(hex(&mac), "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
    }

    #[test]
    fn mac_is_reusable_and_debug_is_redacted() {
        let h = HmacSha256::new(b"Jefe");
        assert_eq!(h.mac(b"a"), h.mac(b"a"));
        assert_ne!(h.mac(b"a"), h.mac(b"b"));
        assert_eq!(format!("{h:?}"), "HmacSha256(<redacted>)");
    }
}
