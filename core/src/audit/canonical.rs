//! The bytes a record's hash is taken over, and the two digests the log uses.
//!
//! A record is hashed over a *canonical* JSON form: object keys sorted by their UTF-8 bytes, no
//! whitespace, strings and numbers as serde_json writes them. It is computed from a parsed
//! `serde_json::Value`, never from a struct's field order, because serde_json's map type depends
//! on a Cargo feature (`preserve_order`, which qdrant-edge turns on for the whole workspace): with
//! it a map keeps insertion order and `to_string` would not be canonical. The writer puts the
//! hash member in front of these bytes to make the line, so `verify` hashes the line's own bytes
//! and never depends on how a parser reads numbers back.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The canonical serialisation of a JSON value (sorted keys, compact).
pub fn canonical(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    write(value, &mut out);
    out
}

fn write(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, key).expect("writing JSON to a Vec");
                out.push(b':');
                write(value, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(item, out);
            }
            out.push(b']');
        }
        scalar => serde_json::to_writer(&mut *out, scalar).expect("writing JSON to a Vec"),
    }
}

/// Lower-case hex SHA-256 of some bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// HMAC-SHA256 (RFC 2104) as lower-case hex: signs the head file when a key is configured.
/// Twelve lines here rather than a crate for one function; checked against RFC 4231's vectors.
pub fn hmac_sha256_hex(key: &[u8], message: &[u8]) -> String {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    hex(&Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0xf) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_sorts_keys_at_every_level() {
        let v = json!({"b": 1, "a": {"z": [ {"y": 1, "x": 2} ], "c": "é\n"}, "A": null});
        assert_eq!(
            String::from_utf8(canonical(&v)).unwrap(),
            r#"{"A":null,"a":{"c":"é\n","z":[{"x":2,"y":1}]},"b":1}"#
        );
    }

    /// Why `verify` hashes a line's bytes instead of re-serialising it: serde_json's default
    /// float parser may be an ulp off (its `float_roundtrip` feature fixes that), so a parse and
    /// re-serialisation is only stable for numbers it reads exactly, like these.
    #[test]
    fn canonical_is_stable_through_a_parse() {
        let v =
            json!({"confidence": 0.9099, "seq": u64::MAX, "t": "2024-01-01T00:00:00.123456789Z"});
        let bytes = canonical(&v);
        let again: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(canonical(&again), bytes);
    }

    #[test]
    fn sha256_and_hmac_match_published_vectors() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // RFC 4231 test cases 1, 2 and 6 (a key longer than a block).
        assert_eq!(
            hmac_sha256_hex(&[0x0b; 20], b"Hi There"),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        assert_eq!(
            hmac_sha256_hex(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hmac_sha256_hex(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            ),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }
}
